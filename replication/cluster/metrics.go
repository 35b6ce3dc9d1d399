package cluster

import (
	"strconv"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	commitLatency    prometheus.Histogram
	commandsPerEntry prometheus.Histogram
	entriesPerApply  prometheus.Histogram
	applyDuration    prometheus.Histogram
	forwarded        *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry, r func() *raft.Raft) *metrics {
	m := &metrics{
		commitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wardsync_city_commit_latency_seconds", Help: "From proposal to applied result, on the member that took the request.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		commandsPerEntry: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wardsync_city_commands_per_entry", Help: "Commands batched into one Raft entry.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		entriesPerApply: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wardsync_city_entries_per_apply", Help: "Raft entries applied in one FSM batch (one fsync).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 8),
		}),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wardsync_city_fsm_apply_seconds", Help: "Time to apply and fsync one FSM batch.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wardsync_city_forwarded_total", Help: "Requests forwarded from this follower to the leader, by outcome.",
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.commitLatency, m.commandsPerEntry, m.entriesPerApply, m.applyDuration, m.forwarded, &raftCollector{r: r})
	return m
}

var (
	raftStateDesc   = prometheus.NewDesc("wardsync_city_raft_state", "1 for this member's current Raft state.", []string{"state"}, nil)
	raftIndexDesc   = prometheus.NewDesc("wardsync_city_raft_index", "Raft indexes of this member.", []string{"kind"}, nil)
	raftApplyLag    = prometheus.NewDesc("wardsync_city_apply_lag_entries", "Committed entries not yet applied to the FSM.", nil, nil)
	raftTermDesc    = prometheus.NewDesc("wardsync_city_raft_term", "Current Raft term.", nil, nil)
	raftPeersDesc   = prometheus.NewDesc("wardsync_city_raft_voters", "Voters in the configuration.", nil, nil)
	raftLeaderKnown = prometheus.NewDesc("wardsync_city_raft_leader_known", "1 if this member knows a leader.", nil, nil)
)

// raftCollector reads raft's state at scrape time.
type raftCollector struct{ r func() *raft.Raft }

func (c *raftCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{raftStateDesc, raftIndexDesc, raftApplyLag, raftTermDesc, raftPeersDesc, raftLeaderKnown} {
		ch <- d
	}
}

func (c *raftCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.r()
	if r == nil {
		return
	}
	state := r.State()
	for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if s == state {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(raftStateDesc, prometheus.GaugeValue, v, s.String())
	}
	commit, applied := r.CommitIndex(), r.AppliedIndex()
	ch <- prometheus.MustNewConstMetric(raftIndexDesc, prometheus.GaugeValue, float64(r.LastIndex()), "last")
	ch <- prometheus.MustNewConstMetric(raftIndexDesc, prometheus.GaugeValue, float64(commit), "commit")
	ch <- prometheus.MustNewConstMetric(raftIndexDesc, prometheus.GaugeValue, float64(applied), "applied")
	stats := r.Stats()
	if s, err := strconv.ParseFloat(stats["last_snapshot_index"], 64); err == nil {
		// The log before it (less the trailing logs) is gone: a member
		// further behind is sent a snapshot.
		ch <- prometheus.MustNewConstMetric(raftIndexDesc, prometheus.GaugeValue, s, "snapshot")
	}
	lag := 0.0
	if commit > applied {
		lag = float64(commit - applied)
	}
	ch <- prometheus.MustNewConstMetric(raftApplyLag, prometheus.GaugeValue, lag)
	if t, err := strconv.ParseFloat(stats["term"], 64); err == nil {
		ch <- prometheus.MustNewConstMetric(raftTermDesc, prometheus.GaugeValue, t)
	}
	if n, err := strconv.ParseFloat(stats["num_peers"], 64); err == nil {
		ch <- prometheus.MustNewConstMetric(raftPeersDesc, prometheus.GaugeValue, n+1)
	}
	known := 0.0
	if addr, _ := r.LeaderWithID(); addr != "" {
		known = 1
	}
	ch <- prometheus.MustNewConstMetric(raftLeaderKnown, prometheus.GaugeValue, known)
}
