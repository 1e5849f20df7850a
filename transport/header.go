// Package transport carries braid's traffic: one QUIC connection per uplink
// (a path), DATAGRAM frames for inner IP packets, and one control stream per
// path for the session handshake and periodic reports.
//
// Datagram layout (braid/1), all integers big-endian:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|     Kind      |         Sequence number (56 bits) ...         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                 ... Sequence number                           |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                 Payload (inner IP packet, or probe)         ...
//
// The sequence number counts data datagrams per session and direction, so
// the receiver can drop duplicates arriving over different paths. 56 bits
// last for millennia at line rate. Probe datagrams carry their own
// sequence space and are answered on the path they arrived on.
package transport

import (
	"encoding/binary"
	"errors"
)

// HeaderLen is the length of braid's datagram header.
const HeaderLen = 8

// MaxSeq is the largest sequence number the header can carry.
const MaxSeq = 1<<56 - 1

// Kind says what a datagram carries.
type Kind uint8

const (
	// KindData carries one inner IP packet.
	KindData Kind = 0
	// KindProbe asks the peer to echo the payload on the same path.
	KindProbe Kind = 1
	// KindProbeReply is the echo of a KindProbe.
	KindProbeReply Kind = 2
	// KindPad is padding, which the receiver drops: a new path sends it to
	// open QUIC's congestion window while nothing else fills it.
	KindPad Kind = 3
)

// ErrShortDatagram is returned for a datagram shorter than the header.
var ErrShortDatagram = errors.New("datagram shorter than braid header")

// ErrUnknownKind is returned for a datagram whose kind is not known.
var ErrUnknownKind = errors.New("unknown datagram kind")

// PutHeader writes the header into b[:HeaderLen]. seq is truncated to 56 bits.
func PutHeader(b []byte, k Kind, seq uint64) {
	binary.BigEndian.PutUint64(b[:HeaderLen], uint64(k)<<56|seq&MaxSeq)
}

// ParseHeader splits a datagram into its kind, sequence number and payload.
func ParseHeader(b []byte) (Kind, uint64, []byte, error) {
	if len(b) < HeaderLen {
		return 0, 0, nil, ErrShortDatagram
	}
	v := binary.BigEndian.Uint64(b)
	k := Kind(v >> 56)
	if k > KindPad {
		return 0, 0, nil, ErrUnknownKind
	}
	return k, v & MaxSeq, b[HeaderLen:], nil
}
