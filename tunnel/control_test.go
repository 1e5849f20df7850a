package tunnel

import (
	"bytes"
	"encoding/json"
	"math"
	"net/netip"
	"testing"
	"time"
)

// TestConcentratorStatusWriteJSON checks that the status written a client
// at a time is the document json.Marshal makes of it, whatever the
// clients, and that a value JSON cannot carry is an error, as it is for
// json.Marshal.
func TestConcentratorStatusWriteJSON(t *testing.T) {
	client := func(name string, paths ...PathStatus) SessionStatus {
		return SessionStatus{Name: name, Addresses: []netip.Prefix{netip.MustParsePrefix("100.96.0.2/16")},
			Session: 7, State: "active", Paths: paths, Reorder: &ReorderStatus{Hold: time.Millisecond}}
	}
	path := PathStatus{Name: "isp1", State: "up", Local: "10.0.0.1:1", Remote: "10.0.0.2:2", RTT: 20 * time.Millisecond,
		Rate: 1.5e6, IsCapacity: true, Budget: "<failover-only>"} // < and > are escaped as json.Marshal does
	for _, tc := range []struct {
		name    string
		clients []SessionStatus
	}{
		{"nil clients", nil},
		{"no clients", []SessionStatus{}},
		{"one client", []SessionStatus{client("branch", path)}},
		{"three clients", []SessionStatus{client("a", path, path), {Name: "b", State: "none"}, client("c")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := ConcentratorStatus{Role: "concentrator", Listen: "[::]:4443", Clients: tc.clients,
				Counters: CounterSnapshot{"tun_rx_packets": 3}}
			want, err := json.Marshal(st)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if err := st.WriteJSON(&got); err != nil {
				t.Fatal(err)
			}
			if !bytes.HasSuffix(got.Bytes(), []byte("}\n")) {
				t.Errorf("document does not end in a newline: %q", got.Bytes())
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, got.Bytes()); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, got.Bytes())
			}
			if !bytes.Equal(compact.Bytes(), want) {
				t.Errorf("WriteJSON wrote\n%s\njson.Marshal makes\n%s", compact.Bytes(), want)
			}
		})
	}
	bad := path
	bad.Rate = math.NaN()
	st := ConcentratorStatus{Role: "concentrator", Clients: []SessionStatus{client("a", bad)}}
	var got bytes.Buffer
	if err := st.WriteJSON(&got); err == nil {
		t.Errorf("a NaN rate gave no error; wrote %q", got.Bytes())
	}
}
