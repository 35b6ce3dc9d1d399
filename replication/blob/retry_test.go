package blob

import (
	"testing"
	"time"
)

// TestRefusedBlobRetries: a refused upload is tried again after 1 s, then
// after twice as long each time up to 30 s; another blob is not held up,
// and a success (the entry deleted) starts the next refusal at 1 s again.
func TestRefusedBlobRetries(t *testing.T) {
	r := retries{}
	a, b := [32]byte{1}, [32]byte{2}
	t0 := time.Unix(1_790_000_000, 0)
	if !r.due(a, t0) {
		t.Fatal("a blob never refused is not due")
	}
	var waits []time.Duration
	now := t0
	for range 7 {
		w := r.refused(a, now)
		waits = append(waits, w)
		if r.due(a, now.Add(w-time.Millisecond)) || !r.due(a, now.Add(w)) {
			t.Fatalf("after a refusal waiting %s: due too early or not due at the time", w)
		}
		if !r.due(b, now) {
			t.Fatal("another blob is held up by this one's refusal")
		}
		now = now.Add(w)
	}
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30}
	for i := range want {
		if waits[i] != want[i]*time.Second {
			t.Fatalf("waits %v, want %v seconds", waits, want)
		}
	}
	delete(r, a) // uploaded
	if w := r.refused(a, now); w != time.Second {
		t.Fatalf("first refusal after a success waits %s, want 1s", w)
	}
}
