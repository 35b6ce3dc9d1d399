package store

import (
	"encoding/binary"
	"fmt"

	"github.com/wardsync/wardsync/schema"
)

// Key families. Each starts with a short prefix ending in '/'; the parts
// after it are joined by sep (0x00), which sorts before every printable
// byte, so a prefix scan of one ward or status never runs into the next.
//
//	m/<name>                         node metadata (identity, seq, hlc, prev hash)
//	o/<origin> 0 <seq:8>             encoded op, by origin and gapless seq
//	do/<dossier> 0 <hlc:8><origin> 0 <seq:8>   op index by dossier, fold order
//	d/<dossier>                      materialized dossier (schema.EncodeDossier)
//	xs/<ward> 0 <status> 0 <dossier> index: ward + status
//	xd/<due:8> 0 <dossier>           index: due time of open dossiers
//	xa/<assignee> 0 <dossier>        index: assignee
//	xc/<ward> 0 <dossier>            index: dossiers with an open conflict
//	r/<yyyymmdd>                     receipt counter for that local date
//	t/s/<ward> 0 <status>            count of dossiers per ward and status
//	t/p/<procedure> 0 <decided|ontime>  counts for the on-time rate
//	u/<official>                     official (role, name, token hash)
//	ut/<token sha256>                official ID for a token hash
//	br/<blob:32> 0 <dossier>         blob reference: an attach op of dossier names the blob
//
// On the city FSM only:
//
//	wc/<ward> 0 <index:8> <origin> 0 <seq:8>   per-ward change index by Raft commit index
//	hw/<origin>                      highest seq committed from that origin (gapless)
//	pk/<origin>                      the origin's op-signing key and wards, set at first push
//	tr/<dossier>                     the ward that keeps a tracking copy (cross-ward reception)
//	bs/<blob:32>                     the blob's manifest: stored on a majority of members
//	ho/<blob:32> <origin> 0 <seq:8>  an attach op held until its blob is on a majority
//	wl/<ward>                        the ward's current lease (none: epoch 0, its own office)
//	wh/<ward> 0 <epoch:8>            every lease the ward has had, by epoch
//
// On a ward only:
//
//	m/push_acked                     push cursor
//	pc/<ward>                        pull cursor of a ward partition (a backup pulls several)
//	kl/<ward>                        the ward's lease as last pulled from the city
//	m/applied                        last Raft index applied
//	bu/<blob:32>                     a blob of this node's own attach op not yet stored at the city
//	bf/<blob:32>                     a blob of this ward's dossiers to fetch from the city
const sep = 0x00

var (
	prefixMeta       = []byte("m/")
	prefixOp         = []byte("o/")
	prefixDossierOps = []byte("do/")
	prefixDossier    = []byte("d/")
	prefixByStatus   = []byte("xs/")
	prefixByDue      = []byte("xd/")
	prefixByAssignee = []byte("xa/")
	prefixConflicted = []byte("xc/")
	prefixReceipt    = []byte("r/")
	prefixStatusCnt  = []byte("t/s/")
	prefixProcCnt    = []byte("t/p/")
	prefixOfficial   = []byte("u/")
	prefixToken      = []byte("ut/")
	prefixChange     = []byte("wc/")
	prefixHighWater  = []byte("hw/")
	prefixOriginKey  = []byte("pk/")
	prefixTracker    = []byte("tr/")
	prefixBlobRef    = []byte("br/")
	prefixBlobStored = []byte("bs/")
	prefixHeld       = []byte("ho/")
	prefixUpload     = []byte("bu/")
	prefixFetch      = []byte("bf/")
	prefixLease      = []byte("wl/")
	prefixLeaseHist  = []byte("wh/")
	prefixPullCursor = []byte("pc/")
	prefixKnownLease = []byte("kl/")
)

// Metadata keys.
var (
	keyIdentity  = metaKey("identity")
	keySeq       = metaKey("seq")
	keyHLC       = metaKey("hlc")
	keyPrev      = metaKey("prev")
	keyFormat    = metaKey("format")
	keyApplied   = metaKey("applied")
	keyPushAcked = metaKey("push_acked")
	// keyLegacyPullCursor is the one pull cursor of a ward node before
	// pc/<ward>; read only, as the starting point of its own ward's.
	keyLegacyPullCursor = metaKey("pull_cursor")
)

// formatVersion is the key layout version written at init. A node refuses
// a data dir of another version instead of misreading it.
const formatVersion = 1

func metaKey(name string) []byte { return cat(prefixMeta, name) }

// cat joins parts into a fresh key. Parts are []byte, string, or uint64
// (8 bytes big-endian, so numbers sort as numbers).
func cat(prefix []byte, parts ...any) []byte {
	k := append([]byte(nil), prefix...)
	for i, p := range parts {
		if i > 0 {
			k = append(k, sep)
		}
		switch v := p.(type) {
		case string:
			k = append(k, v...)
		case []byte:
			k = append(k, v...)
		case uint64:
			k = binary.BigEndian.AppendUint64(k, v)
		default:
			panic(fmt.Sprintf("store: key part of type %T", p))
		}
	}
	return k
}

func opKey(id schema.OpID) []byte { return cat(prefixOp, id.Origin, id.Seq) }

func opsOfOriginPrefix(origin string) []byte { return append(cat(prefixOp, origin), sep) }

func dossierOpKey(op *schema.Op) []byte {
	k := cat(prefixDossierOps, op.Dossier, uint64(op.HLC))
	k = append(k, op.ID.Origin...)
	k = append(k, sep)
	return binary.BigEndian.AppendUint64(k, op.ID.Seq)
}

func dossierOpsPrefix(dossier string) []byte { return append(cat(prefixDossierOps, dossier), sep) }

func dossierKey(id string) []byte { return cat(prefixDossier, id) }

func statusIndexKey(ward string, st schema.Status, id string) []byte {
	return cat(prefixByStatus, ward, string(st), id)
}

func statusIndexPrefix(ward string, st schema.Status) []byte {
	return append(cat(prefixByStatus, ward, string(st)), sep)
}

func dueIndexKey(due int64, id string) []byte { return cat(prefixByDue, uint64(due), id) }

func assigneeIndexKey(official, id string) []byte { return cat(prefixByAssignee, official, id) }

func conflictIndexKey(ward, id string) []byte { return cat(prefixConflicted, ward, id) }

func conflictIndexPrefix(ward string) []byte { return append(cat(prefixConflicted, ward), sep) }

func assigneeIndexPrefix(official string) []byte { return append(cat(prefixByAssignee, official), sep) }

func receiptKey(date string) []byte { return cat(prefixReceipt, date) }

func statusCountKey(ward string, st schema.Status) []byte {
	return cat(prefixStatusCnt, ward, string(st))
}

func procCountKey(proc, what string) []byte { return cat(prefixProcCnt, proc, what) }

func changeKey(ward string, index uint64, id schema.OpID) []byte {
	k := cat(prefixChange, ward, index)
	k = append(k, id.Origin...)
	k = append(k, sep)
	return binary.BigEndian.AppendUint64(k, id.Seq)
}

func changePrefix(ward string) []byte { return append(cat(prefixChange, ward), sep) }

func highWaterKey(origin string) []byte { return cat(prefixHighWater, origin) }

func originKeyKey(origin string) []byte { return cat(prefixOriginKey, origin) }

func trackerKey(dossier string) []byte { return cat(prefixTracker, dossier) }

func blobRefKey(h [32]byte, dossier string) []byte { return cat(prefixBlobRef, h[:], dossier) }

func blobRefPrefix(h [32]byte) []byte { return append(cat(prefixBlobRef, h[:]), sep) }

func blobStoredKey(h [32]byte) []byte { return cat(prefixBlobStored, h[:]) }

func heldKey(h [32]byte, id schema.OpID) []byte {
	k := cat(prefixHeld, h[:])
	k = append(k, id.Origin...)
	k = append(k, sep)
	return binary.BigEndian.AppendUint64(k, id.Seq)
}

func heldPrefix(h [32]byte) []byte { return cat(prefixHeld, h[:]) }

func heldOriginPrefix(h [32]byte, origin string) []byte {
	return append(append(cat(prefixHeld, h[:]), origin...), sep)
}

func uploadKey(h [32]byte) []byte { return cat(prefixUpload, h[:]) }

func fetchKey(h [32]byte) []byte { return cat(prefixFetch, h[:]) }

func leaseKey(ward string) []byte { return cat(prefixLease, ward) }

func leaseHistKey(ward string, epoch uint64) []byte { return cat(prefixLeaseHist, ward, epoch) }

func leaseHistPrefix(ward string) []byte { return append(cat(prefixLeaseHist, ward), sep) }

func pullCursorKey(ward string) []byte { return cat(prefixPullCursor, ward) }

func knownLeaseKey(ward string) []byte { return cat(prefixKnownLease, ward) }

func officialKey(id string) []byte { return cat(prefixOfficial, id) }

func tokenKey(hash []byte) []byte { return cat(prefixToken, hash) }

// lastPart returns what follows the last separator of k.
func lastPart(k []byte) []byte {
	for i := len(k) - 1; i >= 0; i-- {
		if k[i] == sep {
			return k[i+1:]
		}
	}
	return k
}
