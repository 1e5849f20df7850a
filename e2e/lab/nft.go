package lab

import (
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// labTable is the inet table holding a namespace's blackhole and NAT rules.
var labTable = &nftables.Table{Name: "lab", Family: nftables.TableFamilyINet}

// labChains are the base chains of labTable, keyed by name.
var labChains = map[string]*nftables.Chain{
	"forward":     baseChain(labTable, "forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter),
	"input":       baseChain(labTable, "input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter),
	"output":      baseChain(labTable, "output", nftables.ChainTypeFilter, nftables.ChainHookOutput, nftables.ChainPriorityFilter),
	"postrouting": baseChain(labTable, "postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource),
}

// baseChain returns a base chain description with policy accept.
func baseChain(t *nftables.Table, name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept}
}

// nft returns an nftables connection to the namespace.
func (n *NS) nft() (*nftables.Conn, error) {
	return nftables.New(nftables.WithNetNSFd(int(n.handle)))
}

// Blackhole makes n silently drop every packet that enters or leaves dev
// (forwarded, to n itself, or from n itself) while on is true; false
// removes the rules again. This models a path that fails without the link
// going down.
func (n *NS) Blackhole(dev string, on bool) error {
	tag := "blackhole " + dev
	var rules []*nftables.Rule
	if on {
		rules = []*nftables.Rule{
			dropRule("forward", expr.MetaKeyIIFNAME, dev, tag),
			dropRule("forward", expr.MetaKeyOIFNAME, dev, tag),
			dropRule("input", expr.MetaKeyIIFNAME, dev, tag),
			dropRule("output", expr.MetaKeyOIFNAME, dev, tag),
		}
	}
	if err := n.setLabRules(tag, rules); err != nil {
		return fmt.Errorf("lab: %s: blackhole %s=%v: %w", n.Name, dev, on, err)
	}
	return nil
}

// Masquerade source-NATs to dev's address all traffic leaving through
// outDev, like an ISP's NAT. It applies to IPv4 and IPv6.
func (n *NS) Masquerade(outDev string) error {
	tag := "masquerade " + outDev
	r := &nftables.Rule{
		Table:    labTable,
		Chain:    labChains["postrouting"],
		Exprs:    append(matchIfname(expr.MetaKeyOIFNAME, outDev), &expr.Masq{}),
		UserData: userdata.AppendString(nil, userdata.TypeComment, tag),
	}
	if err := n.setLabRules(tag, []*nftables.Rule{r}); err != nil {
		return fmt.Errorf("lab: %s: masquerade %s: %w", n.Name, outDev, err)
	}
	return nil
}

// dropRule returns a rule for chain that drops packets whose interface
// (key is NFT_META_IIFNAME or NFT_META_OIFNAME) is dev.
func dropRule(chain string, key expr.MetaKey, dev, tag string) *nftables.Rule {
	return &nftables.Rule{
		Table:    labTable,
		Chain:    labChains[chain],
		Exprs:    append(matchIfname(key, dev), &expr.Verdict{Kind: expr.VerdictDrop}),
		UserData: userdata.AppendString(nil, userdata.TypeComment, tag),
	}
}

// matchIfname returns expressions matching interface name dev.
func matchIfname(key expr.MetaKey, dev string) []expr.Any {
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, dev)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
	}
}

// setLabRules replaces all rules in labTable commented tag by rules,
// creating the table and chains as needed.
func (n *NS) setLabRules(tag string, rules []*nftables.Rule) error {
	n.nftMu.Lock()
	defer n.nftMu.Unlock()
	c, err := n.nft()
	if err != nil {
		return err
	}
	c.AddTable(labTable)
	for _, ch := range labChains {
		c.AddChain(ch)
	}
	if err := c.Flush(); err != nil {
		return err
	}
	for _, ch := range labChains {
		old, err := c.GetRules(labTable, ch)
		if err != nil {
			return err
		}
		for _, r := range old {
			if s, _ := userdata.GetString(r.UserData, userdata.TypeComment); s == tag {
				if err := c.DelRule(r); err != nil {
					return err
				}
			}
		}
	}
	for _, r := range rules {
		c.AddRule(r)
	}
	return c.Flush()
}

// steeringTable returns the raw table of impairer id.
func steeringTable(id int) *nftables.Table {
	return &nftables.Table{Name: fmt.Sprintf("labimp%d", id), Family: nftables.TableFamilyINet}
}

// addSteering creates table t, which marks packets arriving on each
// device with the device's mark (for the policy rules of an Impairer) and
// exempts them from connection tracking. IPv6 neighbour discovery is left
// alone: it must reach the namespace with its hop limit of 255 intact.
func (n *NS) addSteering(t *nftables.Table, marks map[string]uint32) error {
	c, err := n.nft()
	if err != nil {
		return err
	}
	c.AddTable(t)
	ch := c.AddChain(baseChain(t, "prerouting", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRaw))
	for dev, mark := range marks {
		c.AddRule(&nftables.Rule{
			Table: t,
			Chain: ch,
			Exprs: slices.Concat(matchIfname(expr.MetaKeyIIFNAME, dev), matchND, []expr.Any{
				&expr.Verdict{Kind: expr.VerdictAccept},
			}),
		})
		c.AddRule(&nftables.Rule{
			Table: t,
			Chain: ch,
			Exprs: append(matchIfname(expr.MetaKeyIIFNAME, dev),
				&expr.Notrack{},
				&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(mark)},
				&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
			),
		})
	}
	return c.Flush()
}

// matchND matches IPv6 neighbour discovery: ICMPv6 types 133 to 137.
var matchND = []expr.Any{
	&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
	&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
	&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
	&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
	&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
	&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{133}, ToData: []byte{137}},
}

// delTable deletes an nftables table, ignoring its absence.
func (n *NS) delTable(t *nftables.Table) error {
	c, err := n.nft()
	if err != nil {
		return err
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}
