// Package config loads and checks braid's configuration files, and writes
// fresh ones (see [WriteInit]). It is the only part of braid that knows
// about viper.
//
// Both files are YAML. Every scalar key can also be set from the
// environment as BRAID_ followed by the key in upper case with dots
// replaced by underscores (BRAID_MODE=aggregate, BRAID_TUN_MTU=1300);
// a list of prefixes is given comma-separated
// (BRAID_ROUTES=10.0.0.0/8,192.168.0.0/16). Overrides passed by the
// caller (command-line flags) beat the environment, which beats the file,
// which beats the defaults. Unknown keys are an error.
//
// Client keys (braid client):
//
//	concentrator             host:port of the concentrator (required; resolved at run time)
//	concentrator_public_key  the concentrator's base64 ed25519 public key (required)
//	private_key_file         this client's PEM private key (required)
//	uplinks                  list, at least one:
//	  - interface            network interface to send over, e.g. wlan0 (this or match)
//	    match                instead of interface: a shell pattern on interface names (e.g. "wlan*"),
//	                         or default-route for any interface with a default route in the main
//	                         table; each such interface that is up and has an address is a path
//	    name                 path name, unique (default: the interface); with match, paths are
//	                         named <name>-<interface>, or the interface without a name
//	    source               source address to bind (default: the interface's first address; not with match)
//	    priority             failover order, lower is preferred (default 0)
//	    metered              avoid unless needed (default false)
//	    weight               share in aggregate mode, > 0 (default 1)
//	    budget               data budget per period, e.g. 10GiB or 500MB (default 0: none)
//	    budget_period        monthly or daily (default monthly)
//	    budget_start_day     monthly: day of the month the period starts, 1..28 (default 1)
//	    budget_action        once the budget is used: failover-only, interactive-only or block (default failover-only)
//	    budget_warn          log a warning once per period at this share, e.g. 80% (default: none)
//	    rate_cap             ceiling on the uplink's estimated rate, e.g. 20Mbit (default 0: none)
//	mode                     failover, aggregate, redundant, flow or auto (default failover)
//	redundancy               copies of each packet in mode redundant, 2..number of uplinks (default 2)
//	classes                  traffic classes, each scheduled by its own mode; the first that matches:
//	  - name                 unique name (required)
//	    mode                 failover, aggregate, redundant, flow or auto (required)
//	    copies               mode redundant: copies, 2..number of uplinks (default: redundancy)
//	    interactive          its packets are interactive (default false)
//	    protocol             tcp, udp, icmp, icmpv6 or 0..255 (default: any)
//	    ports                source or destination ports: 443 or 10000-20000 (default: any)
//	    src_ports, dst_ports source, destination ports (default: any)
//	    dscp                 code points: 0..63 or EF, AF41, CS1... (default: any)
//	    src, dst             source, destination prefixes (default: any)
//	routes                   prefixes sent into the tunnel (default 0.0.0.0/0 and ::/0)
//	tun.name                 TUN device name (default braid0)
//	tun.mtu                  TUN MTU, 0 for automatic from the paths, else 1280..65535 (default 0)
//	table                    routing table for the tunnel routes (default 7800)
//	fwmark                   mark on the tunnel's own sockets (default 0x7800)
//	control                  control socket path (default /run/braid/client.sock)
//	log_level                debug, info, warn or error (default info)
//	usage_file               budget usage, kept across restarts (default /var/lib/braid/usage.json)
//
// Concentrator keys (braid concentrator):
//
//	listen                   UDP address to listen on (default 0.0.0.0:4443)
//	private_key_file         the concentrator's PEM private key (required)
//	pool.ipv4                clients' inner IPv4 addresses (default 100.96.0.0/16; "" for none)
//	pool.ipv6                clients' inner IPv6 addresses (default fd62:7261:6964::/64; "" for none)
//	nat.enabled              masquerade inner traffic leaving the host (default true)
//	nat.interface            only traffic leaving via this interface (default: any but the tunnel)
//	clients                  list of clients allowed to connect:
//	  - name                 unique name (required)
//	    public_key           the client's base64 ed25519 public key (required, unique)
//	    prefixes             LAN prefixes routed to this client (optional)
//	tun.name                 TUN device name (default braid0)
//	tun.mtu                  TUN MTU, 0 for automatic, else 1280..65535 (default 0)
//	state_file               address leases (default /var/lib/braid/leases.json)
//	grace_period             how long a session outlives its last path, >= 1s (default 2m)
//	control                  control socket path (default /run/braid/concentrator.sock)
//	log_level                debug, info, warn or error (default info)
//
// Load only checks syntax and consistency: it resolves no names, looks up
// no interfaces and reads no keys.
package config

import (
	"encoding"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// Scheduler modes, the values of the client's mode key.
const (
	ModeFailover  = "failover"
	ModeAggregate = "aggregate"
	ModeRedundant = "redundant"
	ModeFlow      = "flow"
	ModeAuto      = "auto"
)

var (
	modes     = []string{ModeFailover, ModeAggregate, ModeRedundant, ModeFlow, ModeAuto}
	logLevels = []string{"debug", "info", "warn", "error"}
)

// Tun configures the TUN device.
type Tun struct {
	Name string `mapstructure:"name"` // default "braid0"
	MTU  int    `mapstructure:"mtu"`  // 0 means automatic
}

// Uplink is one network interface the client sends tunnel traffic over,
// as one path.
type Uplink struct {
	Name      string `mapstructure:"name"`      // unique path name; defaults to Interface
	Interface string `mapstructure:"interface"` // e.g. "wlan0"; this or Match
	// Match, instead of Interface, makes the entry stand for every
	// interface whose name matches this shell pattern (path.Match), or
	// with MatchDefaultRoute every interface with a default route in the
	// main table. See PathName and Matches.
	Match    string     `mapstructure:"match"`
	Source   netip.Addr `mapstructure:"source"`   // optional; zero means the interface's first address
	Priority int        `mapstructure:"priority"` // failover order: lower is preferred; default 0
	Metered  bool       `mapstructure:"metered"`  // used only when no unmetered uplink works
	Weight   float64    `mapstructure:"weight"`   // share in aggregate mode; default 1

	// A data budget, see budget.go: bytes per period (0 for none), what
	// happens once they are used, and when a warning is logged.
	Budget         Size    `mapstructure:"budget"`
	BudgetPeriod   string  `mapstructure:"budget_period"`    // PeriodMonthly (default) or PeriodDaily
	BudgetStartDay int     `mapstructure:"budget_start_day"` // monthly: day the period starts, 1..28 (default 1)
	BudgetAction   string  `mapstructure:"budget_action"`    // ActionFailoverOnly (default), ActionInteractiveOnly, ActionBlock
	BudgetWarn     Percent `mapstructure:"budget_warn"`      // log once per period at this share; 0 for never

	// RateCap, if set, is the most the uplink's rate estimate may be:
	// a ceiling, not a setting (rates are measured).
	RateCap Rate `mapstructure:"rate_cap"`
}

// Client is the configuration of braid client.
type Client struct {
	Concentrator          string         `mapstructure:"concentrator"`            // host:port
	ConcentratorPublicKey string         `mapstructure:"concentrator_public_key"` // see ParsePublicKey
	PrivateKeyFile        string         `mapstructure:"private_key_file"`        // see LoadPrivateKey
	Uplinks               []Uplink       `mapstructure:"uplinks"`                 // at least one
	Mode                  string         `mapstructure:"mode"`                    // one of the Mode constants
	Redundancy            int            `mapstructure:"redundancy"`              // copies in mode redundant
	Classes               []Class        `mapstructure:"classes"`                 // see class.go
	Routes                []netip.Prefix `mapstructure:"routes"`                  // sent into the tunnel
	Tun                   Tun            `mapstructure:"tun"`
	Table                 int            `mapstructure:"table"`  // routing table for the tunnel routes
	FwMark                uint32         `mapstructure:"fwmark"` // mark on the tunnel's own sockets
	Control               string         `mapstructure:"control"`
	LogLevel              string         `mapstructure:"log_level"`
	UsageFile             string         `mapstructure:"usage_file"` // budget usage, kept across restarts
}

// ClientEntry is a client the concentrator accepts.
type ClientEntry struct {
	Name      string         `mapstructure:"name"`
	PublicKey string         `mapstructure:"public_key"`
	Prefixes  []netip.Prefix `mapstructure:"prefixes"` // LAN prefixes routed to this client
}

// Pool holds the prefixes clients' inner addresses are leased from.
// A zero prefix means no addresses of that family.
type Pool struct {
	IPv4 netip.Prefix `mapstructure:"ipv4"`
	IPv6 netip.Prefix `mapstructure:"ipv6"`
}

// NAT configures masquerading of inner traffic leaving the concentrator.
type NAT struct {
	Enabled   bool   `mapstructure:"enabled"`
	Interface string `mapstructure:"interface"` // "" means any interface but the tunnel
}

// Concentrator is the configuration of braid concentrator.
type Concentrator struct {
	Listen         netip.AddrPort `mapstructure:"listen"`
	PrivateKeyFile string         `mapstructure:"private_key_file"`
	Pool           Pool           `mapstructure:"pool"`
	NAT            NAT            `mapstructure:"nat"`
	Clients        []ClientEntry  `mapstructure:"clients"`
	Tun            Tun            `mapstructure:"tun"`
	StateFile      string         `mapstructure:"state_file"`
	GracePeriod    time.Duration  `mapstructure:"grace_period"` // session kept with zero paths
	Control        string         `mapstructure:"control"`
	LogLevel       string         `mapstructure:"log_level"`
}

// Every scalar key is given a default, even an empty one, so that viper
// knows it and the environment can set it.
var clientDefaults = map[string]any{
	"concentrator":            "",
	"concentrator_public_key": "",
	"private_key_file":        "",
	"mode":                    ModeAuto,
	"redundancy":              MinCopies,
	"routes":                  []string{"0.0.0.0/0", "::/0"},
	"tun.name":                "braid0",
	"tun.mtu":                 0,
	"table":                   7800,
	"fwmark":                  0x7800,
	"control":                 "/run/braid/client.sock",
	"log_level":               "info",
	"usage_file":              "/var/lib/braid/usage.json",
}

var concentratorDefaults = map[string]any{
	"listen":           "0.0.0.0:4443",
	"private_key_file": "",
	"pool.ipv4":        "100.96.0.0/16",
	"pool.ipv6":        "fd62:7261:6964::/64",
	"nat.enabled":      true,
	"nat.interface":    "",
	"tun.name":         "braid0",
	"tun.mtu":          0,
	"state_file":       "/var/lib/braid/leases.json",
	"grace_period":     "2m",
	"control":          "/run/braid/concentrator.sock",
	"log_level":        "info",
}

// LoadClient reads, completes and validates a client config file.
func LoadClient(path string) (*Client, error) {
	return LoadClientWith(path, nil)
}

// LoadClientWith is LoadClient with overrides: values keyed by config
// key ("mode", "tun.mtu") that beat the file and the environment. A path
// of "" reads no file.
func LoadClientWith(path string, overrides map[string]any) (*Client, error) {
	c := new(Client)
	if err := load(path, clientDefaults, overrides, c); err != nil {
		return nil, err
	}
	for i := range c.Uplinks {
		u := &c.Uplinks[i]
		if u.Name == "" {
			u.Name = u.Interface
		}
		if u.Weight == 0 {
			u.Weight = 1
		}
		u.fillBudget()
	}
	c.fillClasses()
	if err := c.Validate(); err != nil {
		return nil, fileError(path, err)
	}
	return c, nil
}

// LoadConcentrator reads, completes and validates a concentrator config
// file.
func LoadConcentrator(path string) (*Concentrator, error) {
	return LoadConcentratorWith(path, nil)
}

// LoadConcentratorWith is LoadConcentrator with overrides, as in
// LoadClientWith.
func LoadConcentratorWith(path string, overrides map[string]any) (*Concentrator, error) {
	c := new(Concentrator)
	if err := load(path, concentratorDefaults, overrides, c); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, fileError(path, err)
	}
	return c, nil
}

// load decodes defaults, the file at path, the environment and overrides
// into out, in increasing order of precedence.
func load(path string, defaults, overrides map[string]any, out any) error {
	v := viper.New()
	v.SetEnvPrefix("BRAID")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	for k, val := range defaults {
		v.SetDefault(k, val)
	}
	if path != "" {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return fileError(path, readError(err))
		}
	}
	for k, val := range overrides {
		v.Set(k, val)
	}
	// Like UnmarshalExact, but collecting unknown keys with their full
	// paths ("uplinks[0].nmae") rather than mapstructure's wording.
	var md mapstructure.Metadata
	err := v.Unmarshal(out, viper.DecodeHook(decodeHook()), func(dc *mapstructure.DecoderConfig) {
		dc.Metadata = &md
	})
	if err != nil {
		return fileError(path, decodeError(err))
	}
	return fileError(path, unknownKeys(md.Unused))
}

func unknownKeys(keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	slices.Sort(keys)
	quoted := make([]string, len(keys))
	for i, k := range keys {
		quoted[i] = strconv.Quote(k)
	}
	if len(keys) == 1 {
		return fmt.Errorf("unknown key %s", quoted[0])
	}
	return fmt.Errorf("unknown keys %s", strings.Join(quoted, ", "))
}

func fileError(path string, err error) error {
	if err == nil {
		return nil
	}
	if path == "" {
		return fmt.Errorf("config: %w", err)
	}
	return fmt.Errorf("config %s: %w", path, err)
}

// readError rewords an error reading or parsing the file without
// repeating the file name.
func readError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var ce viper.ConfigParseError
	if errors.As(err, &ce) {
		err = ce.Unwrap()
	}
	return errors.New(strings.Join(strings.Fields(err.Error()), " "))
}

func decodeHook() mapstructure.DecodeHookFunc {
	return mapstructure.ComposeDecodeHookFunc(
		numberToText,
		parseHook(mapstructure.TextUnmarshallerHookFunc()),
		parseHook(mapstructure.StringToTimeDurationHookFunc()),
		// StringToSliceHookFunc only makes []string; routes are []netip.Prefix.
		mapstructure.StringToWeakSliceHookFunc(","),
	)
}

// parseHook wraps a hook that parses strings: it trims spaces (left by
// "a, b" lists) and rewords errors as `"x" is not a valid prefix`.
func parseHook(h mapstructure.DecodeHookFunc) mapstructure.DecodeHookFuncValue {
	return func(from, to reflect.Value) (any, error) {
		if from.Kind() != reflect.String {
			return mapstructure.DecodeHookExec(h, from, to)
		}
		s := from.String()
		out, err := mapstructure.DecodeHookExec(h, reflect.ValueOf(strings.TrimSpace(s)), to)
		if err != nil {
			return nil, fmt.Errorf("%q is not a valid %s", s, typeName(to.Type()))
		}
		if _, unchanged := out.(string); unchanged {
			return from.Interface(), nil
		}
		return out, nil
	}
}

// numberToText lets a number stand for the text of a type that parses
// text (a port, a DSCP code point, a protocol, a size, a rate): YAML
// makes 443 an integer, but it is "443" that PortRange parses.
func numberToText(from, to reflect.Value) (any, error) {
	if !reflect.PointerTo(to.Type()).Implements(reflect.TypeFor[encoding.TextUnmarshaler]()) {
		return from.Interface(), nil
	}
	switch from.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(from.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(from.Uint(), 10), nil
	case reflect.Float32, reflect.Float64:
		return strconv.FormatFloat(from.Float(), 'f', -1, 64), nil
	}
	return from.Interface(), nil
}

// decodeError rewords mapstructure's errors, one per bad key, as
// `key "routes[0]": "10.0.0.0/33" is not a valid prefix`.
func decodeError(err error) error {
	var msgs []string
	for _, e := range leaves(err) {
		var de *mapstructure.DecodeError
		if !errors.As(e, &de) {
			msgs = append(msgs, e.Error())
			continue
		}
		msgs = append(msgs, fmt.Sprintf("key %q: %s", de.Name(), describe(de.Unwrap())))
	}
	return errors.New(strings.Join(msgs, "; "))
}

// leaves flattens a tree of joined errors.
func leaves(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, leaves(e)...)
	}
	return out
}

func describe(err error) string {
	var pe *mapstructure.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("%q is not a valid %s", fmt.Sprint(pe.Value), typeName(pe.Expected.Type()))
	}
	var ue *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ue) {
		return fmt.Sprintf("expected %s, got %s", typeName(ue.Expected.Type()), typeName(reflect.TypeOf(ue.Value)))
	}
	return err.Error()
}

// typeName names a type as a config file's author would.
func typeName(t reflect.Type) string {
	switch t {
	case nil:
		return "nothing"
	case reflect.TypeFor[netip.Prefix]():
		return "prefix"
	case reflect.TypeFor[netip.Addr]():
		return "IP address"
	case reflect.TypeFor[netip.AddrPort]():
		return "IP:port address"
	case reflect.TypeFor[time.Duration]():
		return "duration"
	case reflect.TypeFor[Size]():
		return "size (e.g. 500MB, 10GiB)"
	case reflect.TypeFor[Percent]():
		return "percentage (e.g. 80%)"
	case reflect.TypeFor[Rate]():
		return "bit rate (e.g. 500kbit, 20Mbit, 1.5Gbit)"
	case reflect.TypeFor[PortRange]():
		return "port or port range (e.g. 443, 10000-20000)"
	case reflect.TypeFor[DSCP]():
		return "DSCP code point (0..63, EF, AF41, CS1...)"
	case reflect.TypeFor[Protocol]():
		return "protocol (tcp, udp, icmp, icmpv6 or 0..255)"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "unsigned integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Bool:
		return "boolean"
	case reflect.String:
		return "string"
	case reflect.Slice, reflect.Array:
		return "list"
	case reflect.Map, reflect.Struct:
		return "map"
	}
	return t.String()
}

// Validate reports the first invalid setting in c, naming its key.
// LoadClient calls it after filling in defaults.
func (c *Client) Validate() error {
	if err := checkHostPort("concentrator", c.Concentrator); err != nil {
		return err
	}
	if err := checkPublicKey("concentrator_public_key", c.ConcentratorPublicKey); err != nil {
		return err
	}
	if c.PrivateKeyFile == "" {
		return errEmpty("private_key_file")
	}
	if err := checkUplinks(c.Uplinks); err != nil {
		return err
	}
	if err := checkOneOf("mode", c.Mode, modes); err != nil {
		return err
	}
	if err := checkCopies("redundancy", c.Redundancy, len(c.Uplinks)); err != nil {
		return err
	}
	if err := checkClasses(c.Classes, len(c.Uplinks)); err != nil {
		return err
	}
	for i, p := range c.Routes {
		if err := checkPrefix(fmt.Sprintf("routes[%d]", i), p); err != nil {
			return err
		}
	}
	if err := c.Tun.check(); err != nil {
		return err
	}
	if c.Table <= 0 || int64(c.Table) > 1<<32-1 {
		return fmt.Errorf("key %q: %d is not a routing table number (1..4294967295)", "table", c.Table)
	}
	if c.FwMark == 0 {
		return fmt.Errorf("key %q: must not be 0", "fwmark")
	}
	if c.Control == "" {
		return errEmpty("control")
	}
	if c.UsageFile == "" && slices.ContainsFunc(c.Uplinks, func(u Uplink) bool { return u.Budget > 0 }) {
		return errEmpty("usage_file")
	}
	return checkOneOf("log_level", c.LogLevel, logLevels)
}

func checkUplinks(uplinks []Uplink) error {
	if len(uplinks) == 0 {
		return fmt.Errorf("key %q: at least one uplink is needed", "uplinks")
	}
	seen := map[string]bool{}
	for i, u := range uplinks {
		key := fmt.Sprintf("uplinks[%d]", i)
		if err := u.check(key); err != nil {
			return err
		}
		if u.Name == "" {
			continue // a match entry naming its paths after the interfaces
		}
		if seen[u.Name] {
			return fmt.Errorf("key %q: name %q is used by another uplink", key+".name", u.Name)
		}
		seen[u.Name] = true
	}
	return nil
}

func (u *Uplink) check(key string) error {
	if err := u.checkInterface(key); err != nil {
		return err
	}
	if u.Match == "" || u.Name != "" {
		if err := checkName(key+".name", u.Name); err != nil {
			return err
		}
	}
	if u.Match != "" && len(u.Name) > maxMatchName {
		return fmt.Errorf("key %q: %q is too long for a match entry: at most %d characters, as paths are named <name>-<interface>", key+".name", u.Name, maxMatchName)
	}
	if u.Match != "" && u.Name == "" && u.Budget > 0 {
		return fmt.Errorf("key %q: a match entry with a budget needs a name, which the budget is kept under", key+".name")
	}
	if u.Match != "" && u.Source.IsValid() {
		return fmt.Errorf("key %q: cannot be set with %q: the address comes from each matched interface", key+".source", key+".match")
	}
	if u.Source.IsValid() && (u.Source.IsUnspecified() || u.Source.IsMulticast()) {
		return fmt.Errorf("key %q: %s is not a unicast address", key+".source", u.Source)
	}
	if !(u.Weight > 0) || math.IsInf(u.Weight, 1) {
		return fmt.Errorf("key %q: %v is not a positive weight", key+".weight", u.Weight)
	}
	return u.checkBudget(key)
}

// MatchDefaultRoute is the match value that stands for every interface
// with a default route in the main table.
const MatchDefaultRoute = "default-route"

// maxMatchName leaves room in a 32-character path name for "-" and an
// interface name of up to 15.
const maxMatchName = 16

// checkInterface checks that exactly one of interface and match is set,
// and that it is valid.
func (u *Uplink) checkInterface(key string) error {
	switch {
	case u.Interface != "" && u.Match != "":
		return fmt.Errorf("keys %q and %q are both set; give one", key+".interface", key+".match")
	case u.Match == "":
		if u.Interface == "" {
			return fmt.Errorf("keys %q and %q are both empty; give one", key+".interface", key+".match")
		}
		return checkIfName(key+".interface", u.Interface)
	case u.Match == MatchDefaultRoute:
		return nil
	}
	if _, err := path.Match(u.Match, ""); err != nil || strings.ContainsAny(u.Match, "/: \t\n") {
		return fmt.Errorf("key %q: %q is not a valid interface name pattern (e.g. \"wlan*\") or %s", key+".match", u.Match, MatchDefaultRoute)
	}
	return nil
}

// Matches says whether a match entry stands for the interface called
// ifname, which has a default route in the main table or not. An entry
// with Interface set matches only that interface.
func (u *Uplink) Matches(ifname string, defaultRoute bool) bool {
	switch u.Match {
	case "":
		return ifname == u.Interface
	case MatchDefaultRoute:
		return defaultRoute
	}
	ok, _ := path.Match(u.Match, ifname)
	return ok
}

// PathName is the name of the path a match entry makes for the
// interface called ifname: <name>-<ifname>, or ifname if the entry has no
// name. Characters a path name cannot hold become '_'.
func (u *Uplink) PathName(ifname string) string {
	clean := []byte(ifname)
	for i, b := range clean {
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '_' || b == '-') {
			clean[i] = '_'
		}
	}
	if u.Name == "" {
		if len(clean) > 0 && (clean[0] == '.' || clean[0] == '-') {
			clean[0] = '_'
		}
		return string(clean)
	}
	return u.Name + "-" + string(clean)
}

// Validate reports the first invalid setting in c, naming its key.
// LoadConcentrator calls it.
func (c *Concentrator) Validate() error {
	if !c.Listen.IsValid() {
		return errEmpty("listen")
	}
	if c.Listen.Port() == 0 {
		return fmt.Errorf("key %q: %s has no port", "listen", c.Listen)
	}
	if c.PrivateKeyFile == "" {
		return errEmpty("private_key_file")
	}
	if err := c.Pool.check(); err != nil {
		return err
	}
	if err := checkClients(c.Clients, c.Pool); err != nil {
		return err
	}
	if err := c.Tun.check(); err != nil {
		return err
	}
	if c.StateFile == "" {
		return errEmpty("state_file")
	}
	if c.GracePeriod < time.Second {
		return fmt.Errorf("key %q: %v is less than 1s", "grace_period", c.GracePeriod)
	}
	if c.Control == "" {
		return errEmpty("control")
	}
	return checkOneOf("log_level", c.LogLevel, logLevels)
}

func (p Pool) check() error {
	if !p.IPv4.IsValid() && !p.IPv6.IsValid() {
		return errors.New(`keys "pool.ipv4" and "pool.ipv6" are both empty; set at least one`)
	}
	if p.IPv4.IsValid() {
		if err := checkPool("pool.ipv4", p.IPv4, true, 30); err != nil {
			return err
		}
	}
	if p.IPv6.IsValid() {
		return checkPool("pool.ipv6", p.IPv6, false, 126)
	}
	return nil
}

func checkPool(key string, p netip.Prefix, v4 bool, maxBits int) error {
	if p.Addr().Is4() != v4 || p.Addr().Is4In6() {
		family := "IPv6"
		if v4 {
			family = "IPv4"
		}
		return fmt.Errorf("key %q: %s is not an %s prefix", key, p, family)
	}
	if p.Bits() > maxBits {
		return fmt.Errorf("key %q: %s is too small, use at most /%d", key, p, maxBits)
	}
	return checkPrefix(key, p)
}

// checkClients checks names and keys are set and unique, and that no
// routed prefix overlaps another or the pool.
func checkClients(clients []ClientEntry, pool Pool) error {
	names := map[string]bool{}
	keys := map[string]bool{}
	routed := map[string]netip.Prefix{"pool.ipv4": pool.IPv4, "pool.ipv6": pool.IPv6}
	for i, c := range clients {
		key := fmt.Sprintf("clients[%d]", i)
		if err := checkName(key+".name", c.Name); err != nil {
			return err
		}
		if names[c.Name] {
			return fmt.Errorf("key %q: name %q is used by another client", key+".name", c.Name)
		}
		names[c.Name] = true
		if err := checkPublicKey(key+".public_key", c.PublicKey); err != nil {
			return err
		}
		pub, _ := ParsePublicKey(c.PublicKey)
		if keys[string(pub)] {
			return fmt.Errorf("key %q: public key is used by another client", key+".public_key")
		}
		keys[string(pub)] = true
		for j, p := range c.Prefixes {
			pkey := fmt.Sprintf("%s.prefixes[%d]", key, j)
			if err := checkPrefix(pkey, p); err != nil {
				return err
			}
			for other, q := range routed {
				if q.IsValid() && p.Overlaps(q) {
					return fmt.Errorf("key %q: %s overlaps %s of %q", pkey, p, q, other)
				}
			}
			routed[pkey] = p
		}
	}
	return nil
}

func (t Tun) check() error {
	if err := checkIfName("tun.name", t.Name); err != nil {
		return err
	}
	if t.MTU != 0 && (t.MTU < 1280 || t.MTU > 65535) {
		return fmt.Errorf("key %q: %d is not 0 (automatic) or 1280..65535", "tun.mtu", t.MTU)
	}
	return nil
}

func errEmpty(key string) error {
	return fmt.Errorf("key %q is empty", key)
}

func checkOneOf(key, val string, allowed []string) error {
	if slices.Contains(allowed, val) {
		return nil
	}
	return fmt.Errorf("key %q: %q is not one of %s", key, val, strings.Join(allowed, ", "))
}

// checkHostPort checks s is host:port with a numeric port, without
// resolving the host.
func checkHostPort(key, s string) error {
	if s == "" {
		return errEmpty(key)
	}
	host, port, err := net.SplitHostPort(s)
	if err == nil && host != "" {
		if n, perr := strconv.ParseUint(port, 10, 16); perr == nil && n > 0 {
			return nil
		}
	}
	return fmt.Errorf("key %q: %q is not host:port", key, s)
}

func checkPublicKey(key, s string) error {
	if s == "" {
		return errEmpty(key)
	}
	if _, err := ParsePublicKey(s); err != nil {
		return fmt.Errorf("key %q: %w", key, err)
	}
	return nil
}

func checkPrefix(key string, p netip.Prefix) error {
	if !p.IsValid() {
		return errEmpty(key)
	}
	if p != p.Masked() {
		return fmt.Errorf("key %q: %s has host bits set; did you mean %s?", key, p, p.Masked())
	}
	return nil
}

// checkIfName checks a network interface name as Linux would.
func checkIfName(key, s string) error {
	if s == "" {
		return errEmpty(key)
	}
	if len(s) > 15 || strings.ContainsAny(s, "/: \t\n") {
		return fmt.Errorf("key %q: %q is not a valid interface name", key, s)
	}
	return nil
}

// checkName checks a path or client name: it is shown in status output
// and used in file names.
func checkName(key, s string) error {
	if s == "" {
		return errEmpty(key)
	}
	if err := validName(s); err != nil {
		return fmt.Errorf("key %q: %w", key, err)
	}
	return nil
}

func validName(s string) error {
	ok := len(s) <= 32 && s != "" && s[0] != '.' && s[0] != '-'
	for _, r := range s {
		ok = ok && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-", r))
	}
	if !ok {
		return fmt.Errorf("%q is not a valid name (1-32 letters, digits, '.', '_' or '-', not starting with '.' or '-')", s)
	}
	return nil
}
