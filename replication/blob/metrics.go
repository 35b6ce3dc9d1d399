package blob

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wardsync/wardsync/node/blobstore"
	"github.com/wardsync/wardsync/schema"
)

type metrics struct {
	bytesIn   prometheus.Counter
	bytesOut  prometheus.Counter
	chunksIn  prometheus.Counter
	badChunks prometheus.Counter
	committed prometheus.Counter
	repaired  prometheus.Counter
	refused   *prometheus.CounterVec
	transfers *prometheus.CounterVec
	duration  *prometheus.HistogramVec
}

// newMetrics registers the blob layer's metrics. missing, if set, is read
// at scrape time for wardsync_blob_missing_chunks.
func newMetrics(reg prometheus.Registerer, bs *blobstore.Store, missing func() float64) *metrics {
	m := &metrics{
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wardsync_blob_received_bytes_total", Help: "Chunk bytes received and stored (verified).",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wardsync_blob_sent_bytes_total", Help: "Chunk bytes sent.",
		}),
		chunksIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wardsync_blob_received_chunks_total", Help: "Chunks received and stored (verified).",
		}),
		badChunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wardsync_blob_bad_chunks_total", Help: "Chunks refused on arrival because they did not match their hash.",
		}),
		committed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wardsync_blob_committed_total", Help: "Blobs this member stored on a majority and recorded through Raft.",
		}),
		repaired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wardsync_blob_repaired_total", Help: "Blobs fetched from a peer because this member lacked them.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wardsync_blob_refused_total", Help: "Blob streams refused, by error code.",
		}, []string{"code"}),
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wardsync_blob_transfers_total", Help: "Blob transfers by direction, peer role and result.",
		}, []string{"direction", "peer", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wardsync_blob_transfer_seconds", Help: "Time of completed blob transfers.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 16),
		}, []string{"direction"}),
	}
	if reg != nil {
		reg.MustRegister(m.bytesIn, m.bytesOut, m.chunksIn, m.badChunks, m.committed, m.repaired, m.refused, m.transfers, m.duration)
		if missing != nil {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "wardsync_blob_missing_chunks", Help: "Chunks of stored, referenced blobs this node still lacks.",
			}, missing))
		}
		if bs != nil {
			reg.MustRegister(&storeCollector{bs})
		}
	}
	return m
}

func (m *metrics) transfer(direction string, peer schema.PeerRole, err error, took time.Duration) {
	result := "ok"
	var remote interface{ Unwrap() error }
	switch {
	case err == nil:
		m.duration.WithLabelValues(direction).Observe(took.Seconds())
	case errors.As(err, &remote):
		result = "refused"
	default:
		result = "cut"
	}
	m.transfers.WithLabelValues(direction, string(peer), result).Inc()
}

// storeCollector reads the blob store's size at scrape time.
type storeCollector struct{ bs *blobstore.Store }

var (
	blobBytesDesc  = prometheus.NewDesc("wardsync_blob_stored_bytes", "Bytes of chunks held in the blob store.", nil, nil)
	blobChunksDesc = prometheus.NewDesc("wardsync_blob_stored_chunks", "Chunks held in the blob store.", nil, nil)
	blobBlobsDesc  = prometheus.NewDesc("wardsync_blob_manifests", "Blob manifests held (complete or partial).", nil, nil)
)

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- blobBytesDesc
	ch <- blobChunksDesc
	ch <- blobBlobsDesc
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.bs.Stats()
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(blobBytesDesc, prometheus.GaugeValue, float64(st.ChunkBytes))
	ch <- prometheus.MustNewConstMetric(blobChunksDesc, prometheus.GaugeValue, float64(st.Chunks))
	ch <- prometheus.MustNewConstMetric(blobBlobsDesc, prometheus.GaugeValue, float64(st.Blobs))
}
