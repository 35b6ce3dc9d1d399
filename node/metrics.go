package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// metrics are the node's Prometheus collectors, on a registry of its own so
// that several nodes in one test process do not collide.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	ops       *prometheus.CounterVec
	commits   prometheus.Counter
	failures  prometheus.Counter
	batch     prometheus.Histogram
	commitDur prometheus.Histogram
}

func newMetrics(n *Node) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wardsync_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wardsync_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"route"}),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wardsync_ops_written_total", Help: "Ops written on this node, by kind.",
		}, []string{"kind"}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wardsync_store_commits_total", Help: "Group commits (each one fsync).",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wardsync_store_commit_failures_total", Help: "Failed group commits (the store then refuses writes).",
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wardsync_store_commit_batch_writes", Help: "Writes per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		commitDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wardsync_store_commit_duration_seconds", Help: "Time to run and fsync one group commit.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.ops, m.commits, m.failures, m.batch, m.commitDur,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&dossierCollector{n: n}, &blobCollector{n: n})
	m.reg.MustRegister(n.space.Collectors()...)
	return m
}

func (m *metrics) observeCommit(c store.CommitInfo) {
	if c.Err != nil {
		m.failures.Inc()
		return
	}
	m.commits.Inc()
	m.batch.Observe(float64(c.Writes))
	m.commitDur.Observe(c.Duration.Seconds())
}

// dossierCollector reads the ward's counters at scrape time, so the gauges
// are always what the store holds.
type dossierCollector struct{ n *Node }

var (
	dossiersDesc = prometheus.NewDesc("wardsync_dossiers", "Dossiers of this node's ward by status.", []string{"status"}, nil)
	sizeDesc     = prometheus.NewDesc("wardsync_store_bytes", "On-disk size of the store.", []string{"part"}, nil)
)

func (c *dossierCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dossiersDesc
	ch <- sizeDesc
}

func (c *dossierCollector) Collect(ch chan<- prometheus.Metric) {
	if c.n.id.Ward != "" { // a backup has no ward of its own to count
		c.collectDossiers(ch)
	}
	lsm, vlog := c.n.store.Size()
	ch <- prometheus.MustNewConstMetric(sizeDesc, prometheus.GaugeValue, float64(lsm), "lsm")
	ch <- prometheus.MustNewConstMetric(sizeDesc, prometheus.GaugeValue, float64(vlog), "vlog")
}

func (c *dossierCollector) collectDossiers(ch chan<- prometheus.Metric) {
	var st store.Stats
	err := c.n.store.View(func(tx *store.Tx) error {
		var err error
		st, err = tx.Stats(c.n.id.Ward)
		return err
	})
	if err == nil {
		for _, s := range schema.Statuses {
			ch <- prometheus.MustNewConstMetric(dossiersDesc, prometheus.GaugeValue, float64(st.ByStatus[s]), string(s))
		}
	}
}

// blobCollector reads the blob store's counts at scrape time.
type blobCollector struct{ n *Node }

var (
	blobBytesDesc  = prometheus.NewDesc("wardsync_blob_bytes", "Bytes of attachment chunks in the blob store.", nil, nil)
	blobChunksDesc = prometheus.NewDesc("wardsync_blob_chunks", "Attachment chunks in the blob store.", nil, nil)
	blobsDesc      = prometheus.NewDesc("wardsync_blobs", "Attachments (blob manifests) in the blob store.", nil, nil)
)

func (c *blobCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- blobBytesDesc
	ch <- blobChunksDesc
	ch <- blobsDesc
}

func (c *blobCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.n.blobs.Stats()
	if err != nil {
		c.n.log.Warn("metrics: blob store stats", "err", err)
		return
	}
	ch <- prometheus.MustNewConstMetric(blobBytesDesc, prometheus.GaugeValue, float64(st.ChunkBytes))
	ch <- prometheus.MustNewConstMetric(blobChunksDesc, prometheus.GaugeValue, float64(st.Chunks))
	ch <- prometheus.MustNewConstMetric(blobsDesc, prometheus.GaugeValue, float64(st.Blobs))
}
