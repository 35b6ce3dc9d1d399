package wire

import "github.com/wardsync/wardsync/schema"

// LeaseInfo carries a ward's lease, and how far the ward's partition
// reaches at the city (Head: the commit index of its latest change), so a
// node catching up can show progress.
//
//	ward, active, epoch, since, reason, by, home, handback_to, handback_reason, index, ready, head
type LeaseInfo struct {
	Lease schema.Lease
	Head  uint64
}

func (*LeaseInfo) Type() Type { return TypeLeaseInfo }

func (m *LeaseInfo) appendPayload(e *encoder) {
	l := &m.Lease
	e.string(l.Ward, MaxName, "ward")
	e.string(l.Active, MaxName, "active")
	e.uvarint(l.Epoch)
	e.fixed64(uint64(l.Since))
	e.string(l.Reason, MaxText, "reason")
	e.string(l.By, MaxName, "by")
	e.string(l.Home, MaxName, "home")
	e.string(l.HandbackTo, MaxName, "handback_to")
	e.string(l.HandbackReason, MaxText, "handback_reason")
	e.uvarint(l.Index)
	e.uvarint(l.Ready)
	e.uvarint(m.Head)
}

func (m *LeaseInfo) decodePayload(d *decoder) {
	l := &m.Lease
	l.Ward = d.string(MaxName, "ward")
	l.Active = d.string(MaxName, "active")
	l.Epoch = d.uvarint("epoch")
	l.Since = int64(d.fixed64("since"))
	l.Reason = d.string(MaxText, "reason")
	l.By = d.string(MaxName, "by")
	l.Home = d.string(MaxName, "home")
	l.HandbackTo = d.string(MaxName, "handback_to")
	l.HandbackReason = d.string(MaxText, "handback_reason")
	l.Index = d.uvarint("index")
	l.Ready = d.uvarint("ready")
	m.Head = d.uvarint("head")
}

// LeaseRelease: the holder of Ward's lease at Epoch has pushed every op up
// to LastSeq and hands the ward on, as a pending handback asked.
type LeaseRelease struct {
	Ward    string
	Epoch   uint64
	LastSeq uint64
}

func (*LeaseRelease) Type() Type { return TypeLeaseRelease }

func (m *LeaseRelease) appendPayload(e *encoder) {
	e.string(m.Ward, MaxName, "ward")
	e.uvarint(m.Epoch)
	e.uvarint(m.LastSeq)
}

func (m *LeaseRelease) decodePayload(d *decoder) {
	m.Ward = d.string(MaxName, "ward")
	m.Epoch = d.uvarint("epoch")
	m.LastSeq = d.uvarint("last_seq")
}
