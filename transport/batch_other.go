//go:build !linux

package transport

import "net"

// batching returns c as is: write batching and receive coalescing are
// Linux only (sendmmsg, UDP GSO and GRO).
func batching(c *net.UDPConn, shards int) net.PacketConn { return c }

// gateOf returns nil: without batchConn, nothing holds back the reader.
func gateOf(net.PacketConn) *rxGate { return nil }
