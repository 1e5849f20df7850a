package scheduler

import "slices"

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

// Last returns the highest sequence number accepted so far (0 if none).
func (w *Window) Last() uint64 { return w.last }

// Gaps appends to dst, in ascending order, the inclusive ranges of the
// sequence numbers not seen that lie at or after from and below the
// highest accepted, at most limit of them (the newest ones), and returns
// the lowest sequence number the ranges account for: every seq from it
// up to Last is either seen or in a range. The window only reaches
// WindowSize back, so neither does that number.
func (w *Window) Gaps(dst [][2]uint64, from uint64, limit int) ([][2]uint64, uint64) {
	lo := from
	if w.last > WindowSize {
		lo = max(lo, w.last-WindowSize)
	}
	if lo >= w.last {
		return dst, w.last
	}
	start := len(dst)
	covered := lo
	inGap := false
	var hi uint64 // the highest seq of the gap being walked, while inGap
	for seq := w.last; seq > lo; {
		seq--
		if w.seen(seq) {
			if inGap {
				dst = append(dst, [2]uint64{seq + 1, hi})
				inGap = false
			}
			continue
		}
		if !inGap {
			if len(dst)-start == limit {
				covered = seq + 1
				break
			}
			inGap, hi = true, seq
		}
	}
	if inGap {
		dst = append(dst, [2]uint64{lo, hi})
	}
	slices.Reverse(dst[start:])
	return dst, covered
}

// seen says whether seq, no more than WindowSize behind the highest seq
// accepted, was accepted.
func (w *Window) seen(seq uint64) bool {
	return w.ring[(seq/blockBits)%ringBlocks]&(1<<(seq%blockBits)) != 0
}
