package tunnel

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"sort"
)

// Lease is the inner addresses of one client.
type Lease struct {
	IPv4 netip.Addr `json:"ipv4,omitzero"`
	IPv6 netip.Addr `json:"ipv6,omitzero"`
}

// Leases assign each client its inner addresses from the pools and keep
// them in a file, so a client gets the same addresses across reconnects
// and concentrator restarts. The first address of each pool is the
// concentrator's own.
type Leases struct {
	path         string // "" keeps leases in memory only
	pool4, pool6 netip.Prefix
	byName       map[string]Lease
}

// LoadLeases reads the lease file at path (a missing file is an empty one).
func LoadLeases(path string, pool4, pool6 netip.Prefix) (*Leases, error) {
	l := &Leases{path: path, pool4: pool4.Masked(), pool6: pool6.Masked(), byName: map[string]Lease{}}
	if path == "" {
		return l, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &l.byName); err != nil {
		return nil, fmt.Errorf("lease file %s: %w", path, err)
	}
	return l, nil
}

// Assign gives every name in names a lease, keeping existing ones that
// still fit the pools, and saves the file if anything changed.
func (l *Leases) Assign(names []string) error {
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	changed := false
	for _, name := range sorted {
		old := l.byName[name]
		lease := old
		if l.pool4.IsValid() && !l.usable(l.pool4, lease.IPv4, name) {
			lease.IPv4 = l.free(l.pool4, func(x Lease) netip.Addr { return x.IPv4 })
		}
		if l.pool6.IsValid() && !l.usable(l.pool6, lease.IPv6, name) {
			lease.IPv6 = l.free(l.pool6, func(x Lease) netip.Addr { return x.IPv6 })
		}
		if !lease.IPv4.IsValid() && l.pool4.IsValid() || !lease.IPv6.IsValid() && l.pool6.IsValid() {
			return fmt.Errorf("address pool exhausted assigning %q", name)
		}
		if lease != old {
			l.byName[name] = lease
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return l.save()
}

// usable reports whether a is a client address of pool not leased to
// anybody but name.
func (l *Leases) usable(pool netip.Prefix, a netip.Addr, name string) bool {
	if !a.IsValid() || !pool.Contains(a) || a == pool.Addr() || a == gatewayFor(pool) || isBroadcast(pool, a) {
		return false
	}
	for other, x := range l.byName {
		if other != name && (x.IPv4 == a || x.IPv6 == a) {
			return false
		}
	}
	return true
}

// free returns the lowest address of pool that no lease holds.
func (l *Leases) free(pool netip.Prefix, field func(Lease) netip.Addr) netip.Addr {
	taken := map[netip.Addr]bool{}
	for _, x := range l.byName {
		taken[field(x)] = true
	}
	for a := gatewayFor(pool).Next(); pool.Contains(a) && !isBroadcast(pool, a); a = a.Next() {
		if !taken[a] {
			return a
		}
	}
	return netip.Addr{}
}

func isBroadcast(pool netip.Prefix, a netip.Addr) bool {
	return a.Is4() && a.Next().IsValid() && !pool.Contains(a.Next())
}

// Get returns name's lease.
func (l *Leases) Get(name string) Lease { return l.byName[name] }

func (l *Leases) save() error {
	if l.path == "" {
		return nil
	}
	data, err := json.MarshalIndent(l.byName, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(l.path, data); err != nil {
		return fmt.Errorf("lease file %s: %w", l.path, err)
	}
	return nil
}
