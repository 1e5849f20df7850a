package transport

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
)

// ProtocolVersion is the version a client announces in its Hello.
const ProtocolVersion = 1

// MaxControlMessage bounds one control message, so a peer cannot make us
// buffer more than this per path.
const MaxControlMessage = 16 << 10

// Control messages travel on each path's bidirectional control stream as a
// 2-byte length followed by a JSON object with exactly one field set. JSON
// keeps the control plane readable in captures and easy to extend; it is
// not on the per-packet path.

// Hello is the client's first message on a path.
type Hello struct {
	Version  int     `json:"version"`
	Uplink   string  `json:"uplink"`   // the client's name for this path
	Priority int     `json:"priority"` // failover tier, lower is preferred
	Weight   float64 `json:"weight"`   // share in aggregate mode
	Metered  bool    `json:"metered"`
	// Budgeted says the uplink counts its bytes against a data budget:
	// the concentrator sends it no warm-up padding.
	Budgeted bool   `json:"budgeted,omitempty"`
	Mode     string `json:"mode"` // scheduler mode the client wants for its downstream
	// Instance is random per client process: a new one tells the
	// concentrator to start a new session (sequence numbers restart).
	Instance uint64 `json:"instance"`
	// Direct says the client takes direct datagrams (direct.go).
	Direct bool `json:"direct,omitempty"`
	// Single says the client has this one uplink: while its path is up,
	// every packet goes as a direct datagram.
	Single bool `json:"single,omitempty"`
}

// Welcome is the concentrator's answer: the session the path joined.
type Welcome struct {
	Session   uint64         `json:"session"`   // changes when the concentrator creates a new session
	Name      string         `json:"name"`      // the client's identity as the concentrator knows it
	Addresses []netip.Prefix `json:"addresses"` // inner addresses, with the pool's prefix length
	Routes    []netip.Prefix `json:"routes"`    // prefixes reachable through the concentrator (informational)
	MTU       int            `json:"mtu"`       // largest inner packet the concentrator will send
	// Direct says the concentrator takes direct datagrams on the path
	// (direct.go), and sends them if the hello said the client does.
	Direct bool `json:"direct,omitempty"`
}

// Report is sent periodically in both directions on every path: what this
// side received on the path, so the peer can compute delivery and loss
// without trusting clocks.
type Report struct {
	RxPackets  uint64 `json:"rx_packets"`
	RxBytes    uint64 `json:"rx_bytes"`
	HighestSeq uint64 `json:"highest_seq"`
	// Budget, from the client, is the restriction in force on this path
	// because its uplink's data budget is used up: "failover-only",
	// "interactive-only" or "block"; empty while the budget lasts.
	Budget string `json:"budget,omitempty"`
}

// Paths is sent by the client, on every path that works, whenever one of
// its paths goes down or comes back: the concentrator stops sending on
// the ones listed at once, rather than after they fell silent for long
// enough to be declared dead, and resends what it had in flight on them.
// The list is complete each time, so the latest message wins.
type Paths struct {
	Down []string `json:"down"` // uplink names
}

// Missing is the concentrator's answer to a Paths message that names a
// path newly down: which data datagrams of the client's it has not
// received, once the dead path has stopped delivering. Of what the dead
// path had in flight, the client then resends only those, rather than
// everything sent in its last round trip: most of that arrived, and
// carrying it again would hold up the rest on the surviving path (a
// round trip of 50 Mbit/s is 200 ms of a 20 Mbit/s uplink).
//
// Every sequence number from From to Highest was received unless it is
// in one of Gaps; what is below From or above Highest is unknown.
type Missing struct {
	Highest uint64      `json:"highest"` // highest sequence number received
	From    uint64      `json:"from"`
	Gaps    [][2]uint64 `json:"gaps"` // inclusive ranges, ascending
}

// MaxMissingGaps bounds Missing.Gaps (at about 25 bytes each, a message
// stays well under MaxControlMessage).
const MaxMissingGaps = 256

// Lacks says whether seq may not have been received.
func (m *Missing) Lacks(seq uint64) bool {
	if seq < m.From || seq > m.Highest {
		return true
	}
	i, _ := slices.BinarySearchFunc(m.Gaps, seq, func(g [2]uint64, seq uint64) int {
		return cmp.Compare(g[1], seq)
	})
	return i < len(m.Gaps) && m.Gaps[i][0] <= seq
}

// check reports what is wrong with m.
func (m *Missing) check() error {
	if m.From > m.Highest {
		return fmt.Errorf("missing: from %d above highest %d", m.From, m.Highest)
	}
	if len(m.Gaps) > MaxMissingGaps {
		return fmt.Errorf("missing: %d gaps, at most %d", len(m.Gaps), MaxMissingGaps)
	}
	for i, g := range m.Gaps {
		if g[0] > g[1] || g[0] < m.From || g[1] > m.Highest || i > 0 && g[0] <= m.Gaps[i-1][1] {
			return fmt.Errorf("missing: gap %v out of order or outside [%d, %d]", g, m.From, m.Highest)
		}
	}
	return nil
}

// Message is one control message; exactly one field is set.
type Message struct {
	Hello   *Hello   `json:"hello,omitempty"`
	Welcome *Welcome `json:"welcome,omitempty"`
	Report  *Report  `json:"report,omitempty"`
	Paths   *Paths   `json:"paths,omitempty"`
	Missing *Missing `json:"missing,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// ErrBadMessage is returned for a control message that does not parse or
// does not have exactly one field set.
var ErrBadMessage = errors.New("bad control message")

// WriteMessage writes m to w in one Write call.
func WriteMessage(w io.Writer, m *Message) error {
	buf, err := marshalMessage(m)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

// marshalMessage returns m framed for the control stream: its length in
// two bytes, then its JSON.
func marshalMessage(m *Message) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(body) > MaxControlMessage {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrBadMessage, len(body), MaxControlMessage)
	}
	buf := make([]byte, 2+len(body))
	binary.BigEndian.PutUint16(buf, uint16(len(body)))
	copy(buf[2:], body)
	return buf, nil
}

// ReadMessage reads one message from r.
func ReadMessage(r io.Reader) (*Message, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := int(binary.BigEndian.Uint16(n[:]))
	if size > MaxControlMessage {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrBadMessage, size, MaxControlMessage)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return ParseMessage(body)
}

// ParseMessage decodes one message body (without the length prefix).
func ParseMessage(body []byte) (*Message, error) {
	var m Message
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	set := 0
	for _, ok := range []bool{m.Hello != nil, m.Welcome != nil, m.Report != nil, m.Paths != nil, m.Missing != nil, m.Error != ""} {
		if ok {
			set++
		}
	}
	if set != 1 {
		return nil, fmt.Errorf("%w: %d fields set, want 1", ErrBadMessage, set)
	}
	if m.Missing != nil {
		if err := m.Missing.check(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
		}
	}
	return &m, nil
}
