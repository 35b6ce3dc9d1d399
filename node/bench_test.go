package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// benchOpenNode makes a real node on disk in a fresh directory.
func benchOpenNode(b *testing.B) (*Node, store.Official) {
	b.Helper()
	dir := b.TempDir()
	ward := schema.DefaultWards().All()[0].Code
	if _, err := Init(context.Background(), Config{Dir: dir}, InitParams{Ward: ward, Node: "bench"}); err != nil {
		b.Fatal(err)
	}
	n, err := Open(Config{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { n.Close() })
	return n, store.Official{ID: "admin", Name: "Bench Clerk", Role: schema.RoleClerk}
}

// BenchmarkDurableCreate measures dossier creates through the service, each
// acknowledged only after fsync, with 1, 16 and 64 concurrent writers. It
// reports creates/s and fsyncs per create: group commit is what lets many
// writers share one fsync.
func BenchmarkDurableCreate(b *testing.B) {
	for _, writers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			n, who := benchOpenNode(b)
			in := schema.NewDossier{Procedure: "birth-registration",
				Applicant: schema.Applicant{Name: "Nguyễn Văn An", IDNumber: "079123456789", Phone: "0901234567"},
				Fields:    map[string]string{"child_name": "Nguyễn Thị Bình", "birth_place": "Bệnh viện Từ Dũ"}}
			commits0 := n.Store().Commits()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := n.CreateDossier(context.Background(), who, in); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			commits := n.Store().Commits() - commits0
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "creates/s")
			b.ReportMetric(float64(commits)/float64(b.N), "fsyncs/op")
		})
	}
}

// BenchmarkRawFsync measures the disk under the benchmark's data dir: one
// small append and fdatasync per op. Its ops/s is the ceiling for durable
// writes without group commit; DurableCreate's creates/s divided by it shows
// how far group commit goes past that ceiling.
func BenchmarkRawFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "fsync.dat"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 512)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "fsyncs/s")
}
