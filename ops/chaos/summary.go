package chaos

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Summary is what one run did and found.
type Summary struct {
	Seed     uint64
	Duration time.Duration // of the fault phase
	Took     time.Duration // the whole run
	Dir      string
	Replay   string // the command that runs this schedule again

	// Faults counts the faults injected, by kind (a lease move counts as
	// the failover or handback it was, or as refused).
	Faults map[string]int
	// Skipped names the kinds this run could not inject, and why.
	Skipped map[string]string

	// The clients' writes: acknowledged (2xx), refused (4xx or connection
	// refused), failed (503) and unknown (no answer).
	Acked, Refused, Failed, Unknown int
	AckedByKind                     map[string]int
	Errors                          map[string]int // answers other than 2xx, by status and code
	Dossiers                        int            // acknowledged dossiers
	// Disk-full windows: writes acknowledged and refused by the node
	// whose disk was full, its crashes and restarts while full.
	DiskFullAcks, DiskFullErrors      int
	DiskFullCrashes, DiskFullRestarts int
	LeaseOps                          int // lease reads and changes in the porcupine history

	Violations   []string
	Notes        []string
	HarnessError string // the run could not be carried out
}

func newSummary(seed uint64, d time.Duration) *Summary {
	return &Summary{Seed: seed, Duration: d, Faults: map[string]int{}, Skipped: map[string]string{}}
}

// Passed reports whether the run was carried out and found nothing.
func (s *Summary) Passed() bool { return s.HarnessError == "" && len(s.Violations) == 0 }

// WriteRun prints one run's summary and, for each violation, how to replay it.
func (s *Summary) WriteRun(w io.Writer) {
	status := "PASS"
	if !s.Passed() {
		status = "FAIL"
	}
	var faults []string
	total := 0
	for _, k := range slices.Sorted(maps.Keys(s.Faults)) {
		faults = append(faults, fmt.Sprintf("%s %d", k, s.Faults[k]))
		total += s.Faults[k]
	}
	fmt.Fprintf(w, "seed %d: %s in %s: %d faults (%s); %d writes acknowledged (%d dossiers), %d refused, %d failed, %d unknown; %d lease operations; %d violations\n",
		s.Seed, status, s.Took, total, strings.Join(faults, ", "), s.Acked, s.Dossiers, s.Refused, s.Failed, s.Unknown, s.LeaseOps, len(s.Violations))
	if s.DiskFullAcks+s.DiskFullErrors > 0 {
		fmt.Fprintf(w, "seed %d: disk full: %d writes acknowledged and %d refused by the full node (%d crashes, %d restarts)\n",
			s.Seed, s.DiskFullAcks, s.DiskFullErrors, s.DiskFullCrashes, s.DiskFullRestarts)
	}
	for i, n := range s.Notes {
		if i == 5 {
			fmt.Fprintf(w, "seed %d: note: and %d more (events.log)\n", s.Seed, len(s.Notes)-5)
			break
		}
		fmt.Fprintf(w, "seed %d: note: %s\n", s.Seed, n)
	}
	for _, v := range s.Violations {
		fmt.Fprintf(w, "seed %d: VIOLATION: %s\n", s.Seed, v)
	}
	if s.HarnessError != "" {
		fmt.Fprintf(w, "seed %d: ERROR (the run could not be carried out): %s\n", s.Seed, s.HarnessError)
	}
	if !s.Passed() {
		fmt.Fprintf(w, "seed %d: replay: %s   (work dir %s: events.log, logs/)\n", s.Seed, s.Replay, s.Dir)
	}
}

// Campaign adds up runs.
type Campaign struct {
	Runs, Passed    int
	Faults          map[string]int
	Skipped         map[string]string
	Acked, Dossiers int
	Refused, Failed int
	Unknown         int
	AckedByKind     map[string]int
	DiskFullAcks    int
	DiskFullErrors  int
	// DiskFullCrashes counts full nodes that died (SIGBUS) instead of
	// refusing; DiskFullRestarts those whose storage failed for good.
	DiskFullCrashes, DiskFullRestarts int
	LeaseOps                          int
	Violations                        int
	HarnessErrors                     int
	FailingSeeds                      []uint64
	Took                              time.Duration // the runs' times added up
	// Wall and Parallel, when set: the campaign's own time, with Parallel
	// runs going on at a time.
	Wall     time.Duration
	Parallel int
}

// Add counts one run in.
func (c *Campaign) Add(s Summary) {
	if c.Faults == nil {
		c.Faults, c.Skipped, c.AckedByKind = map[string]int{}, map[string]string{}, map[string]int{}
	}
	c.Runs++
	if s.Passed() {
		c.Passed++
	} else {
		c.FailingSeeds = append(c.FailingSeeds, s.Seed)
	}
	for k, n := range s.Faults {
		c.Faults[k] += n
	}
	maps.Copy(c.Skipped, s.Skipped)
	for k, n := range s.AckedByKind {
		c.AckedByKind[k] += n
	}
	c.Acked += s.Acked
	c.Dossiers += s.Dossiers
	c.Refused += s.Refused
	c.Failed += s.Failed
	c.Unknown += s.Unknown
	c.DiskFullAcks += s.DiskFullAcks
	c.DiskFullErrors += s.DiskFullErrors
	c.DiskFullCrashes += s.DiskFullCrashes
	c.DiskFullRestarts += s.DiskFullRestarts
	c.LeaseOps += s.LeaseOps
	c.Violations += len(s.Violations)
	if s.HarnessError != "" {
		c.HarnessErrors++
	}
	c.Took += s.Took
}

// WriteTable prints the campaign's summary table.
func (c *Campaign) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "runs\t%d (%d passed)\n", c.Runs, c.Passed)
	if c.Wall > 0 {
		fmt.Fprintf(tw, "time\t%s (%.0fs a run, %d at a time)\n", c.Wall.Round(time.Second), c.Took.Seconds()/float64(max(c.Runs, 1)), max(c.Parallel, 1))
	} else {
		fmt.Fprintf(tw, "time\t%s (%.0fs a run)\n", c.Took.Round(time.Second), c.Took.Seconds()/float64(max(c.Runs, 1)))
	}
	total := 0
	for _, n := range c.Faults {
		total += n
	}
	fmt.Fprintf(tw, "faults injected\t%d\n", total)
	for _, k := range slices.Sorted(maps.Keys(c.Faults)) {
		fmt.Fprintf(tw, "  %s\t%d\n", k, c.Faults[k])
	}
	for _, k := range slices.Sorted(maps.Keys(c.Skipped)) {
		fmt.Fprintf(tw, "  %s\t%s\n", k, c.Skipped[k])
	}
	var kinds []string
	for _, k := range slices.Sorted(maps.Keys(c.AckedByKind)) {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, c.AckedByKind[k]))
	}
	fmt.Fprintf(tw, "writes acknowledged\t%d (%s)\n", c.Acked, strings.Join(kinds, ", "))
	fmt.Fprintf(tw, "  dossiers acknowledged\t%d\n", c.Dossiers)
	fmt.Fprintf(tw, "writes refused / failed / unknown\t%d / %d / %d\n", c.Refused, c.Failed, c.Unknown)
	fmt.Fprintf(tw, "disk full: acknowledged / refused\t%d / %d\n", c.DiskFullAcks, c.DiskFullErrors)
	fmt.Fprintf(tw, "disk full: node crashed / storage failed\t%d / %d (of %d disk-full faults)\n",
		c.DiskFullCrashes, c.DiskFullRestarts, c.Faults[KindDiskFullWard]+c.Faults[KindDiskFullMember])
	fmt.Fprintf(tw, "lease operations checked\t%d\n", c.LeaseOps)
	fmt.Fprintf(tw, "violations\t%d\n", c.Violations)
	fmt.Fprintf(tw, "runs not carried out\t%d\n", c.HarnessErrors)
	if len(c.FailingSeeds) > 0 {
		var seeds []string
		for _, s := range c.FailingSeeds {
			seeds = append(seeds, fmt.Sprint(s))
		}
		fmt.Fprintf(tw, "failing seeds\t%s\n", strings.Join(seeds, " "))
	}
	return tw.Flush()
}
