package blob

import (
	"testing"

	"github.com/wardsync/wardsync/schema"
)

// BenchmarkTransfer moves a 64 MiB blob between two blob stores over an
// in-memory pipe: the protocol, hashing and storage without the network.
func BenchmarkTransfer(b *testing.B) {
	for range b.N {
		b.StopTimer()
		src, dst := openStore(b), openStore(b)
		data := make([]byte, 64*schema.ChunkSize)
		copy(data, "%PDF-1.7\n")
		for i := 9; i < len(data); i += 4096 {
			data[i] = byte(i)
		}
		m := importBlob(b, src, data)
		b.StartTimer()
		if _, err := transfer(b, src, dst, &m, 0); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(data)))
	}
}
