package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/wardsync/wardsync/node/blobstore"
	"github.com/wardsync/wardsync/node/httpjson"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// Attachments: scanned documents attached to a dossier. The bytes go to the
// node's blob store (content-addressed, so identical content is stored
// once); the dossier gets an attach op carrying the blob's manifest, and
// the blob is marked for upload to the city, which the sync layer does in
// the background after the metadata.

// blobFetcher gets a blob this node does not hold from the city.
type blobFetcher func(ctx context.Context, hash [32]byte) error

// blobFetchTimeout caps how long a download waits for the city to send a
// blob the node does not hold.
const blobFetchTimeout = 2 * time.Minute

// SetBlobFetcher installs how the node fetches, on demand, a blob it does
// not hold (a scan attached at another office, or one not pulled yet): the
// sync layer's fetch from the city. f returns once the blob is in
// Blobs() or it gave up. nil means the node has no city link. Call it
// before serving.
func (n *Node) SetBlobFetcher(f func(ctx context.Context, hash [32]byte) error) {
	if f == nil {
		n.fetchBlob.Store(nil)
		return
	}
	bf := blobFetcher(f)
	n.fetchBlob.Store(&bf)
}

// errCutShort is an upload whose body ended before its declared length.
var errCutShort = errors.New("the body ended before its declared length")

// uploadBody watches an upload's body and keeps its first read error, so
// that the refusal says what went wrong: over the size limit, or a body
// that stopped short of its Content-Length (io.ErrUnexpectedEOF, which
// the blob store refuses too).
type uploadBody struct {
	r   io.Reader
	n   int64
	err error
}

func (u *uploadBody) Read(p []byte) (int, error) {
	k, err := u.r.Read(p)
	u.n += int64(k)
	if err != nil && err != io.EOF {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = errCutShort
		}
		if u.err == nil {
			u.err = err
		}
	}
	return k, err
}

// explain turns the blob store's refusal of an upload into the error the
// client sees, from what went wrong reading the body, if anything did.
func (u *uploadBody) explain(err error) error {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(u.err, &mbe):
		return fmt.Errorf("%w: the attachment is over this node's limit of %d bytes; nothing was stored", schema.ErrTooLarge, mbe.Limit)
	case u.err != nil && !errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: the upload was cut short after %d bytes (%v); nothing was stored, send the file again", schema.ErrInvalid, u.n, u.err)
	}
	return err
}

// Attach stores body as an attachment of dossier dossierID named name, and
// returns it once both the blob and the attach op are on disk. The type is
// sniffed from the content (PDF, JPEG, PNG or TIFF), never taken from the
// client. The same content attached to the same dossier again is not a
// new op: Attach returns the existing attachment and created false. Any
// refusal (bad name, unknown or another ward's dossier, disallowed type,
// over the limit, truncated body) stores nothing; the dossier is checked
// before a byte of body is read.
func (n *Node) Attach(ctx context.Context, who store.Official, dossierID, name string, body io.Reader) (schema.Attachment, bool, error) {
	if err := schema.ValidateAttachmentName(name); err != nil {
		return schema.Attachment{}, false, err
	}
	if !ValidDossierID(dossierID) {
		return schema.Attachment{}, false, errNoDossier
	}
	if err := n.store.View(func(tx *store.Tx) error {
		d, err := n.ownDossier(tx, dossierID)
		if err != nil {
			return err
		}
		// A read-only office refuses before reading the upload too.
		_, err = n.writeEpoch(tx, d.Ward)
		return err
	}); err != nil {
		return schema.Attachment{}, false, err
	}
	up := &uploadBody{r: body}
	m, err := n.blobs.Import(ctx, up, n.maxAttachment)
	if err != nil {
		return schema.Attachment{}, false, up.explain(err)
	}
	// A blob imported here but not referenced because the write below
	// fails is removed by the blob GC (blobgc.go) after its grace period.
	hash := m.HashHex()
	raw := schema.MarshalBody(schema.NewAttachBody(name, &m))
	var out schema.Attachment
	var created bool
	err = n.store.Write(ctx, func(tx *store.Tx) error {
		created = false
		d, err := n.ownDossier(tx, dossierID)
		if err != nil {
			return err
		}
		if a, ok := findAttachment(&d, hash); ok {
			out = a
			return nil
		}
		op, err := n.appendOp(tx, who, &d, schema.KindAttach, raw)
		if err != nil {
			return err
		}
		a, ok := findAttachment(&d, hash)
		if !ok {
			return fmt.Errorf("node: the attach op of %s did not attach it", hash)
		}
		tx.MarkUpload(m.Hash, op.ID.Seq)
		out, created = a, true
		return nil
	})
	if err != nil {
		return schema.Attachment{}, false, err
	}
	if created {
		n.metrics.ops.WithLabelValues(string(schema.KindAttach)).Inc()
		n.writes.notify()
		n.log.Info("attachment stored", "dossier", dossierID, "hash", hash, "size", m.Size, "type", m.Type, "by", who.ID)
	}
	return out, created, nil
}

func findAttachment(d *schema.Dossier, hash string) (schema.Attachment, bool) {
	for _, a := range d.Attachments {
		if a.Hash == hash {
			return a, true
		}
	}
	return schema.Attachment{}, false
}

// Attachments lists a dossier's attachments, with whether each is held
// here and whether the city has it.
func (n *Node) Attachments(dossierID string) ([]AttachmentView, error) {
	d, err := n.Dossier(dossierID)
	if err != nil {
		return nil, err
	}
	return n.attachmentViews(d.Attachments)
}

func (n *Node) attachmentViews(as []schema.Attachment) ([]AttachmentView, error) {
	out := make([]AttachmentView, 0, len(as))
	err := n.store.View(func(tx *store.Tx) error {
		for i := range as {
			v, err := n.attachmentView(tx, &as[i])
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return nil
	})
	return out, err
}

func (n *Node) attachmentView(tx *store.Tx, a *schema.Attachment) (AttachmentView, error) {
	v := viewAttachment(a)
	h, err := schema.ParseHash(a.Hash)
	if err != nil {
		return v, err // the fold checked it; a stored state never has a bad one
	}
	here, err := n.blobs.Complete(h)
	if err != nil {
		return v, err
	}
	pending, err := tx.UploadPending(h)
	if err != nil {
		return v, err
	}
	uploaded := !pending
	v.Here, v.Uploaded = &here, &uploaded
	return v, nil
}

// OpenAttachment returns the attachment of dossier dossierID whose hash is
// hash, and a reader over its bytes. A blob not wholly held here is
// fetched from the city first (for at most two minutes, and no longer than
// ctx); if it still is not here the error wraps schema.ErrUnavailable.
func (n *Node) OpenAttachment(ctx context.Context, dossierID, hash string) (schema.Attachment, io.ReadSeeker, error) {
	d, err := n.Dossier(dossierID)
	if err != nil {
		return schema.Attachment{}, nil, err
	}
	hash = strings.ToLower(hash)
	a, ok := findAttachment(&d, hash)
	if !ok {
		return schema.Attachment{}, nil, fmt.Errorf("%w: dossier %s has no attachment %s", schema.ErrNotFound, d.ID, hash)
	}
	h, err := schema.ParseHash(hash)
	if err != nil {
		return schema.Attachment{}, nil, err
	}
	r, err := n.blobs.Open(h)
	if err == nil {
		return a, r, nil
	}
	if !errors.Is(err, blobstore.ErrMissing) {
		return schema.Attachment{}, nil, err
	}
	f := n.fetchBlob.Load()
	if f == nil {
		return schema.Attachment{}, nil, fmt.Errorf("%w: the scan is not on this node yet, and this node has no link to the city (run it with --city)", schema.ErrUnavailable)
	}
	fctx, cancel := context.WithTimeout(ctx, blobFetchTimeout)
	defer cancel()
	ferr := (*f)(fctx, h)
	if r, err = n.blobs.Open(h); err == nil {
		return a, r, nil
	}
	if !errors.Is(err, blobstore.ErrMissing) {
		return schema.Attachment{}, nil, err
	}
	n.log.Warn("attachment not held here and not fetched from the city", "dossier", d.ID, "hash", hash, "err", ferr)
	msg := "the scan is not on this node yet and the city cannot be reached"
	if ferr != nil {
		msg += " (" + ferr.Error() + ")"
	}
	return schema.Attachment{}, nil, fmt.Errorf("%w: %s; try again later", schema.ErrUnavailable, msg)
}

// ---- HTTP ----------------------------------------------------------------

// handleAttach is POST /v1/dossiers/{id}/attachments?name=FILE; the body
// is the file itself, whatever its Content-Type header says.
func (n *Node) handleAttach(w http.ResponseWriter, r *http.Request, who store.Official) error {
	name := r.URL.Query().Get("name")
	if name == "" {
		return &schema.FieldError{Field: "name", Reason: "is required: the file name, as ?name=FILE"}
	}
	if r.ContentLength > n.maxAttachment {
		// Refused before a byte of it is read.
		return fmt.Errorf("%w: the attachment is %d bytes; this node's limit is %d bytes", schema.ErrTooLarge, r.ContentLength, n.maxAttachment)
	}
	a, created, err := n.Attach(r.Context(), who, r.PathValue("id"), name, http.MaxBytesReader(w, r.Body, n.maxAttachment))
	if err != nil {
		return err
	}
	views, err := n.attachmentViews([]schema.Attachment{a})
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", "/v1/dossiers/"+r.PathValue("id")+"/attachments/"+a.Hash)
	}
	httpjson.WriteJSON(w, status, views[0])
	return nil
}

func (n *Node) handleAttachments(w http.ResponseWriter, r *http.Request, _ store.Official) error {
	items, err := n.Attachments(r.PathValue("id"))
	if err != nil {
		return err
	}
	httpjson.WriteJSON(w, http.StatusOK, map[string]any{"items": items})
	return nil
}

// handleDownload is GET /v1/dossiers/{id}/attachments/{hash}, with range
// requests (a cut download resumes with Range and If-Range on the ETag).
func (n *Node) handleDownload(w http.ResponseWriter, r *http.Request, _ store.Official) error {
	// The server's WriteTimeout counts from the request; a download may
	// first wait up to blobFetchTimeout for the city, then send the file.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(blobFetchTimeout + time.Minute))
	a, rd, err := n.OpenAttachment(r.Context(), r.PathValue("id"), r.PathValue("hash"))
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", a.Type)
	h.Set("ETag", `"`+a.Hash+`"`)
	h.Set("Content-Disposition", contentDisposition(a.Name))
	h.Set("X-Content-Type-Options", "nosniff")
	// Citizens' documents: no shared cache, and no copy left on disk by
	// the browser of an office PC.
	h.Set("Cache-Control", "private, no-store")
	http.ServeContent(w, r, "", time.Time{}, rd)
	return nil
}

// contentDisposition names the download: filename="..." for an ASCII
// name; for any other, an ASCII stand-in and the real name as filename*
// (RFC 6266, RFC 8187), which every current browser uses.
func contentDisposition(name string) string {
	ascii := true
	for _, r := range name {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) {
			ascii = false
			break
		}
	}
	if ascii {
		// ValidateAttachmentName refused '"', '\' and line breaks.
		return `attachment; filename="` + name + `"`
	}
	fallback := strings.Map(func(r rune) rune {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) {
			return '_'
		}
		return r
	}, name)
	v := mime.FormatMediaType("attachment", map[string]string{"filename": name})
	if ext, ok := strings.CutPrefix(v, "attachment; "); ok {
		return `attachment; filename="` + fallback + `"; ` + ext
	}
	return `attachment; filename="` + fallback + `"`
}
