package chaos

import (
	"math/rand/v2"
	"time"
)

// The fault kinds a schedule draws from, with their weights and how long
// each fault lasts before it is healed.
const (
	KindWardPartition  = "ward-partition"     // every link of an office to the city cut
	KindWardLinkCut    = "ward-link-cut"      // an office's links to one or two members cut
	KindWardLinkLossy  = "ward-link-lossy"    // 10% loss, reordering, duplicates, jitter on an office's links
	KindCityMinority   = "city-minority"      // one member (the leader half the time) cut off from the other two
	KindCityMajority   = "city-majority"      // every member cut off from every other: no majority anywhere
	KindCityBridge     = "city-bridge"        // two members cut from each other, both still reaching the third
	KindOneWayCut      = "one-way-cut"        // a member's datagrams to the others dropped, or theirs to it
	KindKill           = "kill"               // SIGKILL, then a restart (any process, the leader a third of the time)
	KindPause          = "pause"              // SIGSTOP longer than the election timeout, then SIGCONT
	KindClockSkew      = "clock-skew"         // an office restarted with its clock off by seconds to minutes, then back
	KindDiskFullWard   = "disk-full-ward"     // the small disk of a ward office's data dir filled up
	KindDiskFullMember = "disk-full-member"   // the small disk of a member's data dir filled up
	KindLeaseMove      = "lease-move"         // HCM001 or HCM002 failed over to the backup office, or handed back
	KindSplitBrain     = "split-brain"        // HCM001 or HCM002's office cut off from the city while the ward fails over: both offices serve it
	KindMemberReplace  = "member-replace"     // a member removed through the API; a fresh one (new data dir) joins
	KindFailover       = "failover"           // (counted) a failover the city accepted
	KindHandback       = "handback"           // (counted) a handback the city accepted
	KindForcedHandback = "handback-forced"    // (counted) a forced handback the city accepted
	KindLeaseRefused   = "lease-move-refused" // (counted) a lease change the city refused (409) or left unknown
)

type kindSpec struct {
	kind     string
	weight   int
	min, max time.Duration // how long it lasts
}

var kinds = []kindSpec{
	{KindWardPartition, 10, time.Second, 6 * time.Second},
	{KindWardLinkCut, 5, time.Second, 5 * time.Second},
	{KindWardLinkLossy, 5, 2 * time.Second, 6 * time.Second},
	{KindCityMinority, 8, time.Second, 5 * time.Second},
	{KindCityMajority, 4, time.Second, 4 * time.Second},
	{KindCityBridge, 4, time.Second, 5 * time.Second},
	{KindOneWayCut, 5, time.Second, 5 * time.Second},
	{KindKill, 12, 0, 3 * time.Second},
	{KindPause, 8, 4 * raftTimeout, 5 * time.Second},
	{KindClockSkew, 6, 2 * time.Second, 8 * time.Second},
	{KindDiskFullWard, 4, 2 * time.Second, 6 * time.Second},
	{KindDiskFullMember, 4, 2 * time.Second, 6 * time.Second},
	{KindLeaseMove, 14, 0, 0},
	{KindSplitBrain, 4, 3 * time.Second, 8 * time.Second},
	{KindMemberReplace, 3, 0, 0},
}

// scheduled is one fault of a schedule.
type scheduled struct {
	At   time.Duration // after the fault phase starts
	Kind string
	Dur  time.Duration // how long it holds before it heals
	Pick uint64        // chooses the target (and its details) when it is injected
}

// makeSchedule draws the faults of a run from the seed: a fault starts
// every 0.5–3 s (so several overlap), of a kind drawn by weight, held for
// a time in the kind's range. The same seed gives the same schedule.
func makeSchedule(seed uint64, d time.Duration) []scheduled {
	rng := rand.New(rand.NewPCG(seed, 0x7363686564756c65))
	total := 0
	for _, k := range kinds {
		total += k.weight
	}
	var out []scheduled
	replaces := 0
	for at := time.Second + time.Duration(rng.Int64N(int64(time.Second))); at < d; at += 500*time.Millisecond + time.Duration(rng.Int64N(int64(2500*time.Millisecond))) {
		n := rng.IntN(total)
		var k kindSpec
		for _, k = range kinds {
			if n < k.weight {
				break
			}
			n -= k.weight
		}
		if k.kind == KindMemberReplace {
			if replaces == spareMembers {
				k = kinds[0]
			}
			replaces++
		}
		dur := k.min
		if k.max > k.min {
			dur += time.Duration(rng.Int64N(int64(k.max - k.min)))
		}
		// A fault never outlasts the phase by much: all heal at its end.
		dur = min(dur, d-at+time.Second)
		out = append(out, scheduled{At: at, Kind: k.kind, Dur: dur, Pick: rng.Uint64()})
	}
	return out
}
