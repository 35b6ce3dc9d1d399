package node_test

import (
	"strings"
	"testing"

	"github.com/wardsync/wardsync/schema"
)

// TestFormTooBigToSyncIsRefused: a form within the character limits whose
// encoding would exceed the op size limit (multi-byte text in every field)
// gets 413 and stores nothing, instead of an op that could never sync.
func TestFormTooBigToSyncIsRefused(t *testing.T) {
	e := startNode(t)
	fields := map[string]string{}
	for i := 0; i < schema.MaxFields; i++ {
		fields["f"+strings.Repeat("x", i%10)+string(rune('a'+i%26))+string(rune('a'+i/26))] = strings.Repeat("ệ", schema.MaxFieldValueLen)
	}
	before := lastSeq(t, e.Node)
	r := e.call("POST", "/v1/dossiers", e.Admin, map[string]any{"procedure": "birth-registration",
		"applicant": map[string]string{"name": "Nguyễn Văn An", "id_number": "079123456789"}, "fields": fields})
	r.wantError(t, 413, "too_large", "")
	if after := lastSeq(t, e.Node); after != before {
		t.Fatalf("seq moved from %d to %d", before, after)
	}
}
