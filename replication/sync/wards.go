package sync

import (
	"context"
	"encoding/json"
	"sort"
	gosync "sync"
	"time"

	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// WardView is one ward's sync state as the city sees it (GET /v1/wards).
type WardView struct {
	Ward          string            `json:"ward"`
	Connected     bool              `json:"connected"`
	Member        string            `json:"member,omitempty"`
	Node          string            `json:"node,omitempty"`
	LastSeen      *time.Time        `json:"last_seen"`
	HighWater     map[string]uint64 `json:"high_water"` // per origin (node) of this ward
	PullCursor    uint64            `json:"pull_cursor"`
	PartitionHead uint64            `json:"partition_head"`
	LagEntries    uint64            `json:"lag_entries"` // commits of the partition the ward has not pulled
	LagSeconds    float64           `json:"lag_seconds"` // since it was last seen, while it lags
	// Pullers is each node's pull cursor of the partition: the ward office
	// and, after a failover, its backup (whose catch-up `ops failover
	// --wait` shows against the lease's ready index).
	Pullers map[string]uint64 `json:"pullers"`
	Lease   *schema.Lease     `json:"lease,omitempty"` // this member's copy; GET .../lease reads it linearizably
}

const infoSessions = "sync_sessions"

// Wards gathers every ward's state: the FSM's high-water marks and
// partition heads, and the sessions held by every member (asked over the
// cluster protocol; an unreachable member only means fewer sessions).
func (s *Server) Wards(ctx context.Context) (any, error) {
	sessions := s.Sessions()
	var unreachable []string
	if members, err := s.c.Members(); err == nil {
		// Ask the others at once: one slow member must not delay the rest.
		var mu gosync.Mutex
		var wg gosync.WaitGroup
		for id, addr := range members {
			if id == s.c.NodeID() {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				var theirs []WardSession
				b, err := s.c.InfoFrom(ctx, addr, infoSessions)
				if err == nil {
					err = json.Unmarshal(b, &theirs)
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					unreachable = append(unreachable, id)
					return
				}
				sessions = append(sessions, theirs...)
			}()
		}
		wg.Wait()
	}
	sort.Strings(unreachable)
	views := map[string]*WardView{}
	view := func(ward string) *WardView {
		v, ok := views[ward]
		if !ok {
			v = &WardView{Ward: ward, HighWater: map[string]uint64{}, Pullers: map[string]uint64{}}
			views[ward] = v
		}
		return v
	}
	err := s.c.Store().View(func(tx *store.Tx) error {
		infos, hws, err := tx.Origins()
		if err != nil {
			return err
		}
		for origin, info := range infos {
			for _, w := range info.Wards {
				view(w).HighWater[origin] = hws[origin]
			}
		}
		for _, ws := range sessions {
			v := view(ws.Ward)
			if v.LastSeen == nil || ws.LastSeen.After(*v.LastSeen) {
				t := ws.LastSeen
				v.LastSeen, v.Node = &t, ws.Node
			}
			if ws.Connected {
				v.Connected, v.Member = true, ws.Member
			}
			v.PullCursor = max(v.PullCursor, ws.PullCursor)
			v.Pullers[ws.Node] = max(v.Pullers[ws.Node], ws.PullCursor)
		}
		for ward, v := range views {
			if v.PartitionHead, err = tx.PartitionHead(ward); err != nil {
				return err
			}
			if l, err := tx.Lease(ward); err != nil {
				return err
			} else if l.Epoch > 0 {
				v.Lease = &l
			}
			if v.PartitionHead > v.PullCursor {
				v.LagEntries = v.PartitionHead - v.PullCursor
				if v.LastSeen != nil {
					v.LagSeconds = time.Since(*v.LastSeen).Seconds()
				}
			}
		}
		return nil
	})
	out := make([]WardView, 0, len(views))
	for _, v := range views {
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ward < out[j].Ward })
	// Sessions held by an unreachable member are missing from the view.
	return map[string]any{"items": out, "answered_by": s.c.NodeID(), "unreachable_members": nonNil(unreachable)}, err
}

// WardsHandler returns the function the city API's GET /v1/wards calls,
// and makes this member's sessions available to the others.
func (s *Server) WardsHandler() func(context.Context) (any, error) {
	s.c.RegisterInfo(infoSessions, func() ([]byte, error) { return json.Marshal(s.Sessions()) })
	return s.Wards
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
