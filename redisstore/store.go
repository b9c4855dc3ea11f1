// Package redisstore keeps saga state in Redis (github.com/redis/go-redis/v9).
//
// Each saga is one hash, "ksaga:{<sagaID>}": the hash tag puts every key of a
// saga in one Redis Cluster slot. Each transition is one Lua script, loaded
// once and called by SHA, that dedupes the incoming event, checks the saga's
// version and status, runs the step's domain write, records the outcome and
// stores the reply (see transitionLua for the layout).
//
// A step's domain keys (balances, stock) live under the step's own prefix and
// are passed to the same script, so the domain write and the saga transition
// are atomic. On Redis Cluster that requires the domain keys to share the
// saga's slot; the reference saga's domain keys do not, so run it on a single
// primary (optionally with Sentinel). See docs/deploy.md, "Redis".
package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/saga"
)

// Options configure a Store.
type Options struct {
	// Retention is how long a finished saga is kept (default 24h). A saga that
	// never finishes expires at its deadline plus Retention.
	Retention time.Duration
	// Effects are the domain writes transitions may call by name.
	Effects []saga.EffectScript
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// NoActiveIndex turns off the index of unfinished sagas (ActiveKey), a
	// sorted set scored by deadline that in-flight and overdue metrics read.
	// Turn it off on Redis Cluster: it is one key for all sagas.
	NoActiveIndex bool
}

// ActiveKey is the sorted set of unfinished sagas, scored by deadline (ms).
const ActiveKey = "ksaga:active"

// Store is a saga.Store on Redis.
type Store struct {
	rdb       redis.UniversalClient
	retention time.Duration
	now       func() time.Time
	scripts   map[string]*redis.Script // by effect name; "" = no effect
	index     bool
}

var _ saga.Store = (*Store)(nil)

// New returns a Store. Call Load before serving to load its scripts.
func New(rdb redis.UniversalClient, opts Options) (*Store, error) {
	s := &Store{rdb: rdb, retention: opts.Retention, now: opts.Now, scripts: map[string]*redis.Script{}, index: !opts.NoActiveIndex}
	if s.retention <= 0 {
		s.retention = 24 * time.Hour
	}
	if s.retention < time.Second {
		return nil, fmt.Errorf("redisstore: retention %s is under 1s: Redis expires keys in whole seconds", s.retention)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.scripts[""] = redis.NewScript(transitionScript(""))
	for _, e := range opts.Effects {
		if e.Name == "" {
			return nil, errors.New("redisstore: effect with no name")
		}
		if _, dup := s.scripts[e.Name]; dup {
			return nil, fmt.Errorf("redisstore: effect %q registered twice", e.Name)
		}
		s.scripts[e.Name] = redis.NewScript(transitionScript(e.Lua))
	}
	return s, nil
}

// Load loads every script into Redis (SCRIPT LOAD), so transitions run by SHA
// from the first call, and reports a Lua syntax error at start-up.
func (s *Store) Load(ctx context.Context) error {
	for name, sc := range s.scripts {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			return fmt.Errorf("load transition script %q: %w", name, err)
		}
	}
	return nil
}

// Key is the Redis key of a saga's hash.
func Key(sagaID string) string { return "ksaga:{" + sagaID + "}" }

// dedupeField is the hash field holding the reply to the event (source, id):
// a 72-bit digest keeps it short whatever the source and id are (a saga sees
// a handful of events; a collision is beyond any practical concern).
func dedupeField(source, id string) string {
	sum := sha256.Sum256([]byte(source + "\x00" + id))
	return "r" + base64.RawURLEncoding.EncodeToString(sum[:9])
}

// Apply implements saga.Store.
func (s *Store) Apply(ctx context.Context, t saga.Transition) (saga.Result, error) {
	if t.SagaID == "" {
		return saga.Result{}, saga.Invalid("transition without a saga id")
	}
	if t.EventSource == "" || t.EventID == "" {
		return saga.Result{}, saga.Invalid("transition without the event's source and id")
	}
	if t.Create && t.Deadline.IsZero() {
		// A step's bug, not the event's: the saga's expiry and the index of
		// unfinished sagas are both reckoned from its deadline.
		return saga.Result{}, fmt.Errorf("redisstore: saga %s: a create needs a Deadline", t.SagaID)
	}
	name := ""
	var ekeys []string
	var eargs []any
	if t.Effect != nil {
		name, ekeys, eargs = t.Effect.Name, t.Effect.Keys, t.Effect.Args
	}
	sc, ok := s.scripts[name]
	if !ok {
		return saga.Result{}, fmt.Errorf("redisstore: effect %q not registered", name)
	}
	now := s.now()
	allow := ",running,compensating,"
	if len(t.Allow) > 0 {
		var b strings.Builder
		b.WriteByte(',')
		for _, st := range t.Allow {
			b.WriteString(string(st))
			b.WriteByte(',')
		}
		allow = b.String()
	}
	deadline := int64(0) // ignored unless t.Create
	if t.Create {
		deadline = t.Deadline.UnixMilli()
	}
	expect := max(t.ExpectVersion, 0)
	args := make([]any, 0, 30+len(eargs))
	args = append(args,
		dedupeField(t.EventSource, t.EventID), now.UnixMilli(), flag(t.Create), expect, allow,
		t.Step, t.Data, deadline, int64(s.retention/time.Second), t.EventType, len(eargs), t.SagaID, flag(s.index))
	args = appendOutcome(args, &t.OnSuccess)
	args = append(args, flag(t.OnFailure != nil))
	if t.OnFailure != nil {
		args = appendOutcome(args, t.OnFailure)
	} else {
		args = appendOutcome(args, &saga.Outcome{})
	}
	args = append(args, eargs...)
	index := Key(t.SagaID)
	if s.index {
		index = ActiveKey
	}
	keys := make([]string, 0, 2+len(ekeys))
	keys = append(keys, Key(t.SagaID), index)
	keys = append(keys, ekeys...)

	vals, err := sc.Run(ctx, s.rdb, keys, args...).StringSlice()
	if err != nil {
		if isScriptError(err) {
			return saga.Result{}, fmt.Errorf("saga %s transition %s: %w", t.SagaID, t.EventType, err)
		}
		return saga.Result{}, saga.Transient(err, "redis")
	}
	return parseResult(vals)
}

func appendOutcome(args []any, o *saga.Outcome) []any {
	rtype, rdata, usesaga := "", []byte(nil), "0"
	if o.Reply != nil {
		rtype = o.Reply.Type
		if o.Reply.Data == nil {
			usesaga = "1"
		} else {
			rdata = o.Reply.Data
		}
	}
	return append(args, o.Outcome, string(o.Status), o.Reason, flag(o.Compensable), o.Compensates, rtype, rdata, usesaga)
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// isScriptError tells a Lua error (a bug or a failed effect without a
// failure outcome: permanent) from a server or connection that cannot take
// the script now (transient): loading, busy, out of memory, failing to
// persist, a replica or a cluster in transition, too many clients.
func isScriptError(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) || errors.Is(err, redis.ErrClosed) {
		return false
	}
	msg := re.Error()
	for _, p := range []string{"LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN",
		"OOM", "MISCONF", "NOREPLICAS", "ERR max number of clients reached"} {
		if strings.HasPrefix(msg, p) {
			return false
		}
	}
	return true
}

func parseResult(v []string) (saga.Result, error) {
	if len(v) != 8 {
		return saga.Result{}, fmt.Errorf("redisstore: script returned %d values", len(v))
	}
	version, err := strconv.ParseInt(v[1], 10, 64)
	if err != nil {
		return saga.Result{}, fmt.Errorf("redisstore: version %q: %w", v[1], err)
	}
	r := saga.Result{Version: version, Status: saga.Status(v[2]), Reason: v[3], From: saga.Status(v[7])}
	switch code := v[0]; {
	case code == "applied":
		r.Applied = true
	case code == "failed":
		r.Applied, r.Failed = true, true
	case code == "duplicate":
		r.Duplicate = true
	case strings.HasPrefix(code, "skipped:"):
		r.Skipped = strings.TrimPrefix(code, "skipped:")
		return r, nil
	default:
		return saga.Result{}, fmt.Errorf("redisstore: unknown result %q", code)
	}
	if v[4] != "" {
		ms, err := strconv.ParseInt(v[5], 10, 64)
		if err != nil {
			return saga.Result{}, fmt.Errorf("redisstore: reply time %q: %w", v[5], err)
		}
		r.Reply = &saga.StoredReply{Type: v[4], Time: time.UnixMilli(ms).UTC(), Data: []byte(v[6])}
	}
	return r, nil
}

// Get implements saga.Store.
func (s *Store) Get(ctx context.Context, sagaID string) (saga.State, error) {
	m, err := s.rdb.HGetAll(ctx, Key(sagaID)).Result()
	if err != nil {
		return saga.State{}, saga.Transient(err, "redis")
	}
	if len(m) == 0 { // HGETALL answers an empty map, not redis.Nil, for a missing key
		return saga.State{}, saga.ErrNotFound
	}
	return parseState(sagaID, m)
}

func parseState(id string, m map[string]string) (saga.State, error) {
	st := saga.State{
		ID: id, Status: saga.Status(m["st"]), Step: m["sp"], Reason: m["rs"], FailedStep: m["fs"],
		Compensate: []string{}, Steps: []saga.StepRecord{},
	}
	var err error
	if st.Version, err = strconv.ParseInt(m["v"], 10, 64); err != nil {
		return saga.State{}, fmt.Errorf("saga %s: version %q: %w", id, m["v"], err)
	}
	st.CreatedAt, st.UpdatedAt, st.Deadline = msTime(m["ca"]), msTime(m["ua"]), msTime(m["dl"])
	if n, _ := strconv.Atoi(m["dc"]); n > 0 {
		var b strings.Builder
		for i := range n {
			b.WriteString(m["d"+strconv.Itoa(i)])
		}
		st.Data = []byte(b.String())
	}
	if cp := m["cp"]; cp != "" {
		st.Compensate = strings.Split(cp, ",")
	}
	type entry struct {
		n int
		r saga.StepRecord
	}
	var entries []entry
	for k, v := range m {
		if len(k) < 2 || k[0] != 'l' {
			continue
		}
		n, err := strconv.Atoi(k[1:])
		if err != nil {
			continue
		}
		p := strings.SplitN(v, "|", 5)
		if len(p) != 5 {
			return saga.State{}, fmt.Errorf("saga %s: history entry %s malformed", id, k)
		}
		off, _ := strconv.ParseInt(p[0], 10, 64)
		r := saga.StepRecord{At: st.CreatedAt.Add(time.Duration(off) * time.Millisecond),
			Step: p[1], Outcome: p[2], EventType: longType(p[3]), Reason: reasonRef(m, p[4])}
		if ref, ok := strings.CutPrefix(p[4], "#"); ok { // the reason is stored under the entry's version
			r.Version, _ = strconv.ParseInt(ref, 10, 64)
		}
		entries = append(entries, entry{n, r})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].n < entries[j].n })
	for _, e := range entries {
		st.Steps = append(st.Steps, e.r)
	}
	return st, nil
}

// reasonRef resolves a history entry's "#<version>" reason reference.
func reasonRef(m map[string]string, ref string) string {
	if strings.HasPrefix(ref, "#") {
		return m["x"+ref[1:]]
	}
	return ref
}

// longType restores a type stored without its "io.ksaga." prefix.
func longType(t string) string {
	if strings.HasPrefix(t, "~") {
		return saga.TypePrefix + t[1:]
	}
	return t
}

func msTime(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
