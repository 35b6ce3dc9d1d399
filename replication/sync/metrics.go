package sync

import "github.com/prometheus/client_golang/prometheus"

type serverMetrics struct {
	sessions    *prometheus.GaugeVec
	pushedOps   prometheus.Counter
	pulledOps   prometheus.Counter
	refused     *prometheus.CounterVec
	pushLatency prometheus.Histogram
}

func newServerMetrics(reg prometheus.Registerer) *serverMetrics {
	m := &serverMetrics{
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wardsync_city_sync_sessions", Help: "Open sync streams on this member, by protocol.",
		}, []string{"proto"}),
		pushedOps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wardsync_city_pushed_ops_total", Help: "Ops from wards committed through this member (new ones only).",
		}),
		pulledOps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wardsync_city_pulled_ops_total", Help: "Ops sent to wards by this member.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wardsync_city_sync_refused_total", Help: "Sync requests refused, by error code.",
		}, []string{"code"}),
		pushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wardsync_city_push_commit_seconds", Help: "From a pushed batch's arrival to its commit.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.sessions, m.pushedOps, m.pulledOps, m.refused, m.pushLatency)
	}
	return m
}

type clientMetrics struct {
	connected  prometheus.Gauge
	outbox     prometheus.Gauge
	lag        prometheus.Gauge
	pushed     prometheus.Counter
	pulled     prometheus.Counter
	reconnects prometheus.Counter
	pullCursor prometheus.Gauge
	pushAcked  prometheus.Gauge
}

func newClientMetrics(reg prometheus.Registerer) *clientMetrics {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &clientMetrics{
		connected:  g("wardsync_sync_connected", "1 while a link to a city member is up."),
		outbox:     g("wardsync_sync_outbox_depth", "Own ops not yet acknowledged by the city."),
		lag:        g("wardsync_sync_lag_seconds", "Age of the oldest op not yet acknowledged by the city."),
		pushed:     c("wardsync_sync_pushed_ops_total", "Own ops acknowledged by the city."),
		pulled:     c("wardsync_sync_pulled_ops_total", "Ops received from the city and stored (new ones only)."),
		reconnects: c("wardsync_sync_reconnects_total", "Links to the city lost and tried again."),
		pullCursor: g("wardsync_sync_pull_cursor", "Commit index of the ward partition applied so far."),
		pushAcked:  g("wardsync_sync_push_acked_seq", "Highest own seq the city acknowledged."),
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.outbox, m.lag, m.pushed, m.pulled, m.reconnects, m.pullCursor, m.pushAcked)
	}
	return m
}
