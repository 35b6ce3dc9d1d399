package cluster

import "sync"

// changeHub wakes pull sessions when their ward's partition changes. A
// waiter takes a channel for its ward and waits for it to close; each
// apply closes the channels of the wards it touched. One channel per ward
// is shared by all its waiters, so an apply costs one close per ward, not
// one per session.
type changeHub struct {
	mu    sync.Mutex
	wards map[string]chan struct{}
}

func newChangeHub() *changeHub { return &changeHub{wards: map[string]chan struct{}{}} }

// wait returns a channel closed at the next change of ward.
func (h *changeHub) wait(ward string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch, ok := h.wards[ward]
	if !ok {
		ch = make(chan struct{})
		h.wards[ward] = ch
	}
	return ch
}

func (h *changeHub) notify(wards map[string]struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range wards {
		if ch, ok := h.wards[w]; ok {
			close(ch)
			delete(h.wards, w)
		}
	}
}

// WaitChanges returns a channel closed at the next committed change of
// ward's partition on this member. Take it before reading the partition,
// so a change between the read and the wait is not missed.
func (c *Cluster) WaitChanges(ward string) <-chan struct{} { return c.hub.wait(ward) }

// notifyAll wakes every waiter (after a snapshot restore replaced the state).
func (h *changeHub) notifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w, ch := range h.wards {
		close(ch)
		delete(h.wards, w)
	}
}
