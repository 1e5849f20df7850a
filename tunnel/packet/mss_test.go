package packet

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
)

// mssOf returns the value of every MSS option of the TCP segment in b.
func mssOf(t *testing.T, b []byte) []uint16 {
	t.Helper()
	info, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	seg := b[info.HdrLen:info.Len]
	opts := seg[20 : seg[12]>>4*4]
	var got []uint16
	for i := 0; i < len(opts); {
		switch {
		case opts[i] == tcpOptEOL:
			return got
		case opts[i] == tcpOptNOP:
			i++
			continue
		case opts[i] == tcpOptMSS && i+4 <= len(opts):
			got = append(got, binary.BigEndian.Uint16(opts[i+2:]))
		}
		if i+1 >= len(opts) || opts[i+1] < 2 {
			return got
		}
		i += int(opts[i+1])
	}
	return got
}

func TestClampMSS(t *testing.T) {
	syn4 := func(flags uint8, opts []byte) []byte {
		return ipv4("192.0.2.1", "198.51.100.2", protoTCP, tcp(40000, 443, flags, opts, nil), v4opts{df: true})
	}
	syn6 := func(flags uint8, opts []byte, exts ...ext) []byte {
		return ipv6("2001:db8::1", "2001:db8:1::2", 0, protoTCP, tcp(40000, 443, flags, opts, nil), exts...)
	}
	mssOpt := []byte{2, 4, 0x05, 0xb4} // 1460
	tests := []struct {
		name    string
		pkt     []byte
		want    bool
		wantMSS []uint16 // after the call; nil: malformed, not checked
	}{
		{"v4 SYN", syn4(flagSYN, synOpts(1460)), true, []uint16{1360}},
		{"v4 SYN-ACK", syn4(flagSYN|flagACK, synOpts(1460)), true, []uint16{1360}},
		{"v4 SYN small MSS", syn4(flagSYN, synOpts(1200)), false, []uint16{1200}},
		{"v4 SYN equal MSS", syn4(flagSYN, synOpts(1360)), false, []uint16{1360}},
		{"v4 SYN payload", ipv4("192.0.2.1", "198.51.100.2", protoTCP,
			tcp(1, 2, flagSYN, mssOpt, payload(33)), v4opts{}), true, []uint16{1360}},
		{"v4 SYN no MSS", syn4(flagSYN, []byte{1, 1, 4, 2}), false, nil},
		{"v4 SYN no options", syn4(flagSYN, nil), false, nil},
		{"v4 ACK with MSS", syn4(flagACK, mssOpt), false, []uint16{1460}},
		{"v4 MSS at odd offset", syn4(flagSYN, []byte{1, 2, 4, 0xff, 0xff}), true, []uint16{1360}},
		{"v4 MSS after SACK-perm", syn4(flagSYN, []byte{4, 2, 2, 4, 0x23, 0x45, 1, 1}), true, []uint16{1360}},
		{"v4 two MSS options", syn4(flagSYN, []byte{2, 4, 0x20, 0, 1, 2, 4, 0x30, 0}), true, []uint16{1360, 1360}},
		{"v4 EOL before MSS", syn4(flagSYN, []byte{0, 2, 4, 0x05, 0xb4}), false, nil},
		{"v4 option length 0", syn4(flagSYN, []byte{8, 0, 2, 4, 0x05, 0xb4}), false, nil},
		{"v4 option length 1", syn4(flagSYN, []byte{8, 1, 2, 4, 0x05, 0xb4}), false, nil},
		{"v4 option too long", syn4(flagSYN, []byte{1, 1, 1, 2, 8, 0x05, 0xb4, 0}), false, nil},
		{"v4 MSS length 3", syn4(flagSYN, []byte{2, 3, 0x05, 0xb4}), false, nil},
		{"v4 MSS at end", syn4(flagSYN, []byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 4, 0x05, 0xb4}), true, []uint16{1360}},
		{"v4 first fragment", ipv4("192.0.2.1", "198.51.100.2", protoTCP,
			tcp(1, 2, flagSYN, mssOpt, nil), v4opts{more: true}), false, []uint16{1460}},
		{"v6 SYN", syn6(flagSYN, synOpts(1440)), true, []uint16{1360}},
		{"v6 SYN ext headers", syn6(flagSYN, synOpts(1440), hopByHop(), destOpts(2)), true, []uint16{1360}},
		{"v6 SYN small MSS", syn6(flagSYN, synOpts(1220)), false, []uint16{1220}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkt := append([]byte{}, tt.pkt...)
			if !l4Valid(pkt) && tt.name != "v4 first fragment" {
				t.Fatal("test packet has a bad checksum")
			}
			if got := ClampMSS(pkt, 1360); got != tt.want {
				t.Errorf("ClampMSS = %v, want %v", got, tt.want)
			}
			if !tt.want && !bytes.Equal(pkt, tt.pkt) {
				t.Errorf("ClampMSS changed the packet but returned false")
			}
			if tt.want && !l4Valid(pkt) {
				t.Errorf("TCP checksum does not verify after ClampMSS")
			}
			if got := mssOf(t, pkt); tt.wantMSS != nil && !slices.Equal(got, tt.wantMSS) {
				t.Errorf("MSS = %v, want %v", got, tt.wantMSS)
			}
			if ClampMSS(pkt, 1360) {
				t.Errorf("second ClampMSS changed the packet again")
			}
		})
	}
}

// TestClampMSSNotTCP checks that ClampMSS leaves everything else alone.
func TestClampMSSNotTCP(t *testing.T) {
	bad := append([]byte{}, syn4...)
	bad[32] = 0x40 // data offset 4
	huge := append([]byte{}, syn4...)
	huge[32] = 0xf0 // data offset 15 > segment
	for _, pkt := range [][]byte{nil, {0x45}, udp4, udp6, ping4, ping6, syn4[:len(syn4)-1], bad, huge} {
		orig := append([]byte{}, pkt...)
		if ClampMSS(pkt, 1000) || !bytes.Equal(pkt, orig) {
			t.Errorf("ClampMSS changed %x", orig)
		}
	}
}

// TestClampMSSChecksumEveryValue clamps every MSS value at both
// alignments to many targets and verifies the checksum from scratch,
// exercising the corners of RFC 1624 arithmetic.
func TestClampMSSChecksumEveryValue(t *testing.T) {
	for _, opts := range [][]byte{{2, 4, 0, 0}, {1, 2, 4, 0, 0}} {
		at := 20 + 20 + len(opts) - 2
		pkt := ipv4("192.0.2.1", "198.51.100.2", protoTCP, tcp(40000, 443, flagSYN, opts, nil), v4opts{})
		for old := 0; old < 1<<16; old += 7 {
			binary.BigEndian.PutUint16(pkt[at:], uint16(old))
			setL4Checksum(pkt[20:], netip4("192.0.2.1"), netip4("198.51.100.2"), protoTCP)
			mss := uint16(old * 31 % (1 << 16))
			changed := ClampMSS(pkt, mss)
			if changed != (uint16(old) > mss) || !l4Valid(pkt) {
				t.Fatalf("old %d mss %d offset %d: changed %v, checksum valid %v",
					old, mss, at, changed, l4Valid(pkt))
			}
		}
	}
}
