package scheduler

// Multi schedules each packet by the Mode of its traffic class: it holds
// a [Classifier] and one Scheduler per class, plus one for the packets of
// no class. The caller classifies a packet once (Packet) and picks with
// the result (Pick), on the goroutine that owns the Multi:
//
//	p := m.Packet(&info, flowHash)
//	picks = m.Pick(picks[:0], p, states)
//
// Each class has its own Scheduler, so classes do not share state (such
// as aggregate's round-robin position).
type Multi struct {
	classifier *Classifier
	scheds     []Scheduler // [0] the default, [i+1] class i
}

// NewMulti returns a Multi that schedules packets of no class by def and
// those of each class by the class's Mode.
func NewMulti(def Mode, classes []Class) (*Multi, error) {
	return NewMultiCopies(def, DefaultCopies, classes)
}

// NewMultiCopies is NewMulti where a def of Redundant sends copies copies
// (copies < 1 means DefaultCopies).
func NewMultiCopies(def Mode, copies int, classes []Class) (*Multi, error) {
	c, err := NewClassifier(classes)
	if err != nil {
		return nil, err
	}
	d, err := New(def)
	if err != nil {
		return nil, err
	}
	if m, _ := ParseMode(string(def)); m == Redundant {
		d = NewRedundant(copies)
	}
	m := &Multi{classifier: c, scheds: []Scheduler{d}}
	for _, cl := range c.classes {
		s, _ := New(cl.Mode) // checked by NewClassifier
		if cl.Mode == Redundant {
			s = NewRedundant(cl.Copies)
		}
		m.scheds = append(m.scheds, s)
	}
	return m, nil
}

// Classifier returns the Multi's classifier.
func (m *Multi) Classifier() *Classifier { return m.classifier }

// Packet classifies a packet: it returns the Packet to pass to Pick, with
// its Class, Size, Flow (the caller's 5-tuple hash) and Interactive (by
// the class, or else by IsInteractive). It allocates nothing.
func (m *Multi) Packet(info *Info, flow uint64) Packet {
	p := Packet{Flow: flow, Size: info.Size, Interactive: IsInteractive(info)}
	if i := m.classifier.Classify(info); i >= 0 {
		p.Class = i + 1
		p.Interactive = p.Interactive || m.classifier.classes[i].Interactive
	}
	return p
}

// Pick picks with the Scheduler of p's Class; a Class out of range is
// the default one.
func (m *Multi) Pick(dst []int, p Packet, paths []PathState) []int {
	return m.schedFor(p).Pick(dst, p, paths)
}

// schedFor returns the Scheduler of p's Class, the default one for a
// Class out of range.
func (m *Multi) schedFor(p Packet) Scheduler {
	if p.Class > 0 && p.Class < len(m.scheds) {
		return m.scheds[p.Class]
	}
	return m.scheds[0]
}

// Copies returns how many copies of p its Scheduler wants: those of its
// class when that class is Redundant, else 0. The caller may send a
// redundant packet outside congestion control (it is protected by its
// copies and paced by its application), and may send the copies that the
// usable paths are short of on the same path.
func (m *Multi) Copies(p Packet) int {
	if r, ok := m.schedFor(p).(redundant); ok {
		return r.n
	}
	return 0
}

// MaySpill reports whether p's Scheduler may move some of p's flow off
// home, the path it picked, onto another as home's queue builds: there a
// standing queue on home is how a flow comes to fill more than one path,
// not a queue to keep short. Aggregate and failover (the overflow onto
// another tier) may use any other usable path, auto those it would spill
// onto (base RTT within its spill limit, loss at most maxSpillLoss or
// home's); flow and redundant never move a flow. A metered path counts
// only while no unmetered one is up, as for picking.
func (m *Multi) MaySpill(p Packet, paths []PathState, home int) bool {
	if home < 0 || home >= len(paths) {
		return false
	}
	f := filter{full: true}
	switch m.schedFor(p).(type) {
	case *aggregate, failover:
	case auto:
		h := &paths[home]
		f = spillFilter(filter{full: true, tier: true, prio: h.Priority}, h)
	default:
		return false
	}
	metered := meteredAllowed(paths)
	for i := range paths {
		if i != home && f.admits(&paths[i], metered) {
			return true
		}
	}
	return false
}
