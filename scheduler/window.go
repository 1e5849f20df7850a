package scheduler

// Window geometry: a ring of 128 64-bit blocks (8192 bits), as in
// WireGuard's replay.Filter and RFC 6479. One block is always the one being
// filled, so the usable window is one block short of the ring.
const (
	blockBits  = 64
	ringBlocks = 128
	// WindowSize is how far behind the highest sequence number accepted
	// so far a sequence number may be and still be accepted.
	WindowSize = (ringBlocks - 1) * blockBits // 8128
)

// Window is a sliding-window duplicate filter for 64-bit sequence numbers,
// as WireGuard's replay.Filter (an RFC 6479 style bitmap of 8192 bits). The
// receiver of a session passes every sequence number through one Window
// shared by all its paths, so a packet sent on several paths, or delivered
// twice, is delivered once.
//
// The zero Window is ready to use and has seen nothing. A Window is not
// internally locked: the caller serialises calls to it.
type Window struct {
	last uint64 // highest sequence number accepted
	ring [ringBlocks]uint64
}

// Reset forgets every sequence number seen, as for a new session.
func (w *Window) Reset() {
	*w = Window{}
}

// Accept reports whether seq is new: it returns true the first time seq is
// seen, provided it is no more than WindowSize behind the highest seq
// accepted so far, and false for duplicates and for seqs too old to tell.
// A seq ahead of all others slides the window forward, however far.
func (w *Window) Accept(seq uint64) bool {
	block := seq / blockBits
	if seq > w.last {
		w.advance(block)
		w.last = seq
	} else if w.last-seq > WindowSize {
		return false
	}
	i, bit := block%ringBlocks, uint64(1)<<(seq%blockBits)
	if w.ring[i]&bit != 0 {
		return false
	}
	w.ring[i] |= bit
	return true
}

// advance clears the blocks after the one holding w.last up to and
// including block, which are about to be reused for newer seqs.
func (w *Window) advance(block uint64) {
	cur := w.last / blockBits
	n := min(block-cur, ringBlocks)
	for b := cur + 1; b <= cur+n; b++ {
		w.ring[b%ringBlocks] = 0
	}
}
