package transport

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	tests := []struct {
		kind Kind
		seq  uint64
	}{
		{KindData, 0},
		{KindData, 1},
		{KindProbe, 1 << 40},
		{KindProbeReply, MaxSeq},
		{KindPad, 7},
	}
	for _, tt := range tests {
		b := make([]byte, HeaderLen+3)
		PutHeader(b, tt.kind, tt.seq)
		copy(b[HeaderLen:], "abc")
		k, seq, payload, err := ParseHeader(b)
		if err != nil || k != tt.kind || seq != tt.seq || string(payload) != "abc" {
			t.Errorf("ParseHeader(PutHeader(%d, %d)) = %d, %d, %q, %v", tt.kind, tt.seq, k, seq, payload, err)
		}
	}
}

func TestHeaderErrors(t *testing.T) {
	if _, _, _, err := ParseHeader(make([]byte, HeaderLen-1)); !errors.Is(err, ErrShortDatagram) {
		t.Errorf("short datagram: err = %v", err)
	}
	b := make([]byte, HeaderLen)
	b[0] = 0x7f
	if _, _, _, err := ParseHeader(b); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("unknown kind: err = %v", err)
	}
}

func TestParseHeaderDoesNotAllocate(t *testing.T) {
	b := make([]byte, 1400)
	PutHeader(b, KindData, 42)
	if n := testing.AllocsPerRun(100, func() { ParseHeader(b) }); n != 0 {
		t.Errorf("ParseHeader allocates %v times", n)
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0x45})
	f.Add([]byte{1, 2, 3})
	f.Add([]byte{2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, seq, payload, err := ParseHeader(b)
		if err != nil {
			return
		}
		out := make([]byte, HeaderLen+len(payload))
		PutHeader(out, k, seq)
		copy(out[HeaderLen:], payload)
		if !bytes.Equal(out, b) {
			t.Fatalf("round trip changed %x to %x", b, out)
		}
	})
}

func TestControlRoundTrip(t *testing.T) {
	msgs := []*Message{
		{Hello: &Hello{Version: ProtocolVersion, Uplink: "wifi", Priority: 1, Weight: 2, Metered: true, Mode: "failover"}},
		{Welcome: &Welcome{Session: 7, Name: "laptop", Addresses: []netip.Prefix{netip.MustParsePrefix("100.96.0.2/16")}, MTU: 1380}},
		{Report: &Report{RxPackets: 10, RxBytes: 12000, HighestSeq: 99}},
		{Paths: &Paths{Down: []string{"isp1", "lte"}}},
		{Missing: &Missing{Highest: 900, From: 100, Gaps: [][2]uint64{{100, 120}, {500, 500}}}},
		{Error: "unknown client"},
	}
	var buf bytes.Buffer
	for _, m := range msgs {
		if err := WriteMessage(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range msgs {
		got, err := ReadMessage(&buf)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		var a, b bytes.Buffer
		WriteMessage(&a, want)
		WriteMessage(&b, got)
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Errorf("message %d: got %s, want %s", i, b.Bytes(), a.Bytes())
		}
	}
}

func TestControlRejects(t *testing.T) {
	bad := []string{`{}`, `{"error":"x","report":{}}`, `not json`, `{"hello":{"version":"one"}}`,
		`{"missing":{"highest":5,"from":6}}`,                           // from above highest
		`{"missing":{"highest":50,"from":0,"gaps":[[10,20],[15,30]]}}`, // overlapping
		`{"missing":{"highest":50,"from":0,"gaps":[[30,20]]}}`,         // reversed
		`{"missing":{"highest":50,"from":20,"gaps":[[10,30]]}}`,        // below from
		`{"missing":{"highest":50,"from":0,"gaps":[[40,60]]}}`,         // above highest
	}
	for _, body := range bad {
		if _, err := ParseMessage([]byte(body)); !errors.Is(err, ErrBadMessage) {
			t.Errorf("ParseMessage(%s): err = %v, want ErrBadMessage", body, err)
		}
	}
	if _, err := ReadMessage(bytes.NewReader([]byte{0xff, 0xff})); !errors.Is(err, ErrBadMessage) {
		t.Errorf("oversized length: err = %v", err)
	}
}

func FuzzReadMessage(f *testing.F) {
	var buf bytes.Buffer
	WriteMessage(&buf, &Message{Hello: &Hello{Version: 1, Uplink: "lte"}})
	f.Add(buf.Bytes())
	buf.Reset()
	WriteMessage(&buf, &Message{Missing: &Missing{Highest: 90, From: 10, Gaps: [][2]uint64{{10, 12}, {50, 60}}}})
	f.Add(buf.Bytes())
	f.Add([]byte{0, 2, '{', '}'})
	f.Add([]byte{0, 30, '{', '"', 'w', 'e', 'l', 'c', 'o', 'm', 'e', '"', ':', '{', '"', 'a', 'd', 'd', 'r', 'e', 's', 's', 'e', 's', '"', ':', '[', '"', 'x', '"', ']', '}', '}'})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ReadMessage(bytes.NewReader(b))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := WriteMessage(&out, m); err != nil {
			t.Fatalf("re-encoding a parsed message failed: %v", err)
		}
		if _, err := ReadMessage(&out); err != nil {
			t.Fatalf("re-encoded message does not parse: %v", err)
		}
		if mm := m.Missing; mm != nil {
			for _, g := range mm.Gaps { // what check admitted, Lacks reads consistently
				if !mm.Lacks(g[0]) || !mm.Lacks(g[1]) {
					t.Fatalf("%+v: a gap's ends not lacking", mm)
				}
			}
		}
	})
}

func TestMissingLacks(t *testing.T) {
	m := &Missing{Highest: 100, From: 10, Gaps: [][2]uint64{{10, 12}, {50, 50}, {70, 80}}}
	for seq, want := range map[uint64]bool{
		0: true, 9: true, // below From: unknown
		10: true, 12: true, 13: false, 49: false, 50: true, 51: false,
		69: false, 70: true, 75: true, 80: true, 81: false, 100: false,
		101: true, // above Highest
	} {
		if got := m.Lacks(seq); got != want {
			t.Errorf("Lacks(%d) = %v, want %v", seq, got, want)
		}
	}
}
