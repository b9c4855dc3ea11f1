// Package redisstore keeps saga records in Redis (github.com/redis/go-redis/v9).
// It is the only package that knows their layout.
//
// Each saga is one hash. Each change is one Lua script, loaded once and
// called by SHA, that dedupes the incoming event, checks the saga's
// definition, version, status and compensation stack, runs the step's
// domain write (its Effect), records the outcome and what the step
// produced, stores the reply the saga then waits on, and keeps the indexes
// the generic operations read (see transitionLua for the fields).
//
// On one primary (optionally with Sentinel: any client but a
// *redis.ClusterClient) the layout is:
//
//	ksaga:{<id>}                 the saga's record (hash)
//	ksaga:idx:defs               the definitions seen (set)
//	ksaga:idx:<saga>:created     its sagas by creation time (sorted set)
//	ksaga:idx:<saga>:due         unfinished sagas by due time (sorted set)
//	ksaga:idx:<saga>:s:<status>  sagas by status: by creation time, or by
//	                             end time for terminal statuses (sorted sets)
//	ksaga:idx:<saga>:k:<key>     the saga id of a business key (string)
//	ksaga:idx:<saga>:stats       the last 1,000 finished sagas (list)
//	ksaga:dl                     dead letters (stream, capped)
//	ksaga:dl:kept:<digest>       a dead letter's once-marker
//	ksaga:dl:replayed            who replayed which dead letter (hash)
//
// and a step's domain keys (balances, stock), wherever they are, are
// passed to the same script: the domain write and the saga's change are
// one atomic script.
//
// On a Redis Cluster (New with a *redis.ClusterClient; REDIS_URL
// "redis://host:port?cluster=true&addr=host2:port2"), a script's keys
// must share one hash slot. Sagas are spread over 64 shards by an
// FNV-1a hash of their id; everything a change of a saga writes except its
// effect is in its shard's slot, tagged {<shard tag>} (see shardTags):
//
//	ksaga:{<t>}:s:<id>                the saga's record (hash)
//	ksaga:{<t>}:p:<id>                its pending change, if any (hash; see cluster.go)
//	ksaga:{<t>}:pending               the shard's pending changes by time (sorted set)
//	ksaga:{<t>}:defs                  the definitions seen (set)
//	ksaga:{<t>}:idx:<saga>:created    as above, for the shard's sagas
//	ksaga:{<t>}:idx:<saga>:due        …
//	ksaga:{<t>}:idx:<saga>:s:<status> …
//	ksaga:{<t>}:idx:<saga>:k:<key>    …
//	ksaga:{<t>}:idx:<saga>:stats      the shard's last finished sagas (list)
//	ksaga:{<t>}:dl                    the shard's dead letters (stream)
//	ksaga:{<t>}:dl:kept:<digest>      a dead letter's once-marker
//	ksaga:dl:replayed                 who replayed which dead letter (hash)
//	ksaga:b:{<tag>}:<id>:<v>:<event>:<n>
//	                                  an effect's barrier, in its keys' slot
//
// so a saga's indexes change in the same script as its record and can
// never disagree with it; reads across sagas (List, Due, Stats, ByKey,
// Compact) read every shard in one pipeline and merge. A step's effect
// must touch keys of one slot (Apply says which keys are not): give keys
// an effect writes together one hash tag ("inventory:{stock}:<sku>"). An
// effect in the saga's own slot runs in the one script; an effect
// elsewhere runs as three scripts — prepare on the saga's slot, the effect
// with its barrier on its own slot, commit on the saga's slot — with the
// same guarantees (cluster.go; docs/redis-cluster.md).
package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/saga"
)

// Options configure a Store.
type Options struct {
	// Retention is how long a finished saga is kept (default 24h). A saga that
	// never finishes expires at its deadline plus Retention.
	Retention time.Duration
	// Now returns the current time (default time.Now).
	Now func() time.Time
}

// Store is a saga.Store on Redis.
type Store struct {
	rdb       redis.UniversalClient
	l         layout
	retention time.Duration
	now       func() time.Time

	mu      sync.Mutex
	scripts map[string]*effectScripts // by effect name; "" = no effect

	slots atomic.Value // Redis Cluster: a slotMap
}

// effectScripts are the scripts of one effect: the whole change in one
// script, and (Redis Cluster) the effect alone with its barrier.
type effectScripts struct {
	lua    string
	change *redis.Script
	effect *redis.Script
}

var _ saga.Store = (*Store)(nil)

var (
	noteScript       = redis.NewScript(noteLua)
	rescheduleScript = redis.NewScript(rescheduleLua)
	keepDLScript     = redis.NewScript(keepDeadLetterLua)
	resolveScript    = redis.NewScript(resolveLua)
)

// New returns a Store. A *redis.ClusterClient gets the Redis Cluster
// layout (see the package doc); any other client the one-primary layout.
func New(rdb redis.UniversalClient, opts Options) (*Store, error) {
	_, cluster := rdb.(*redis.ClusterClient)
	s := &Store{rdb: rdb, l: layout{cluster: cluster}, retention: opts.Retention, now: opts.Now, scripts: map[string]*effectScripts{}}
	if s.retention <= 0 {
		s.retention = 24 * time.Hour
	}
	if s.retention < time.Second {
		return nil, fmt.Errorf("redisstore: retention %s is under 1s: Redis expires keys in whole seconds", s.retention)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.scripts[""] = &effectScripts{change: redis.NewScript(transitionScript(""))}
	return s, nil
}

// Preload loads the change scripts of the given effects (and of none)
// into Redis (SCRIPT LOAD; on a Redis Cluster into every master), so the
// first changes run by SHA, and reports a Lua syntax error at start-up.
// Other scripts load on first use.
func (s *Store) Preload(ctx context.Context, effects ...*saga.Effect) error {
	for _, e := range append([]*saga.Effect{nil}, effects...) {
		sc, err := s.script(e)
		if err != nil {
			return err
		}
		all := []*redis.Script{sc.change}
		if s.l.cluster && e != nil {
			all = append(all, sc.effect)
		}
		for _, x := range all {
			if err := x.Load(ctx, s.rdb).Err(); err != nil {
				return fmt.Errorf("load change script: %w", err)
			}
		}
	}
	return nil
}

// script returns the scripts running effect e (nil: none), built on first
// use. An effect name must always come with the same body.
func (s *Store) script(e *saga.Effect) (*effectScripts, error) {
	name, lua := "", ""
	if e != nil {
		name, lua = e.Name, e.Lua
		if name == "" {
			return nil, errors.New("redisstore: an effect has no name")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sc, ok := s.scripts[name]; ok {
		if sc.lua != lua {
			return nil, fmt.Errorf("redisstore: two effects named %q with different bodies", name)
		}
		return sc, nil
	}
	sc := &effectScripts{lua: lua, change: redis.NewScript(transitionScript(lua)), effect: redis.NewScript(effectScript(lua))}
	s.scripts[name] = sc
	return sc, nil
}

// KeyPatterns are the Redis ACL key patterns of the store's layouts: what
// every function's Redis user needs, besides its own domain's keys.
func KeyPatterns() []string { return []string{"ksaga:{*", "ksaga:idx:*", "ksaga:dl*", "ksaga:b:*"} }

// dedupeField is the hash field holding the reply to the event (source, id):
// a 72-bit digest keeps it short whatever the source and id are (a saga sees
// a handful of events; a collision is beyond any practical concern).
func dedupeField(source, id string) string {
	sum := sha256.Sum256([]byte(source + "\x00" + id))
	return "r" + base64.RawURLEncoding.EncodeToString(sum[:9])
}

// call is a script call with named keys and arguments (see transitionLua).
type call struct {
	keys []string
	args []any
}

func (c *call) key(kind, name, key string) {
	c.keys = append(c.keys, key)
	c.args = append(c.args, kind+"."+name, len(c.keys))
}

// arg adds a change's argument; an empty one is left out (the script
// reads a missing argument as ""): fewer arguments are less work for
// Redis, which copies every one into the script.
func (c *call) arg(name string, v any) {
	switch x := v.(type) {
	case string:
		if x == "" {
			return
		}
	case []byte:
		if len(x) == 0 {
			return
		}
	}
	c.args = append(c.args, "a."+name, v)
}

func (c *call) named(kind string, n saga.Named, key bool) {
	name := n.Name
	if n.List {
		name += "[]"
	}
	for _, v := range n.Values {
		if key {
			c.key(kind, name, v)
		} else {
			c.args = append(c.args, kind+"."+name, v)
		}
	}
}

// Apply implements saga.Store.
func (s *Store) Apply(ctx context.Context, ch saga.Change) (saga.Result, error) {
	if ch.SagaID == "" {
		return saga.Result{}, saga.Invalid("change without a saga id")
	}
	if ch.Event.Source == "" || ch.Event.ID == "" {
		return saga.Result{}, saga.Invalid("change without the event's source and id")
	}
	def := ch.Saga
	if ch.Create != nil {
		def = ch.Create.Saga
		if ch.Create.Deadline.IsZero() {
			// A bug, not the event's: the saga's expiry and due time are
			// reckoned from its deadline.
			return saga.Result{}, fmt.Errorf("redisstore: saga %s: a create needs a Deadline", ch.SagaID)
		}
	}
	if def == "" {
		return saga.Result{}, fmt.Errorf("redisstore: saga %s: the change names no definition", ch.SagaID)
	}
	c, sc, split, err := s.plan(ch, def)
	if err != nil {
		return saga.Result{}, err
	}
	var res saga.Result
	if split != "" {
		res, err = s.applySplit(ctx, ch, c, sc, split)
	} else {
		res, err = s.applyOne(ctx, ch, c, sc.change)
	}
	if err != nil {
		return saga.Result{}, err
	}
	if r := res.Reply; r != nil {
		switch {
		case res.Duplicate:
			r.ID = saga.ReplyID(ch.Event.Source, ch.Event.ID, r.Type)
		case res.Failed && ch.Failure != nil && ch.Failure.Emit != nil:
			r.ID = ch.Failure.Emit.ID
		case ch.Success.Emit != nil:
			r.ID = ch.Success.Emit.ID
		}
		r.Data = saga.MergeReason(r.Data, res.Reason)
	}
	return res, nil
}

// plan builds a change's script call: split is the effect's hash tag when
// its keys are in another slot than the saga's (Redis Cluster), and the
// call then holds the saga's side only.
func (s *Store) plan(ch saga.Change, def string) (c *call, sc *effectScripts, split string, err error) {
	var effect *saga.Effect
	if ch.Effect != nil {
		effect = ch.Effect.Effect
	}
	if sc, err = s.script(effect); err != nil {
		return nil, nil, "", err
	}
	c = s.changeCall(ch, def)
	if ch.Effect == nil {
		return c, sc, "", nil
	}
	if s.l.cluster {
		tag, err := effectTag(effect.Name, ch.Effect.KeyValues())
		if err != nil {
			return nil, nil, "", err
		}
		if slot(tag) != slot(c.keys[0]) {
			return c, sc, tag, nil
		}
	}
	addEffect(c, ch.Effect)
	return c, sc, "", nil
}

// changeCall is the saga's side of a change: its keys (all in the saga's
// slot) and arguments, without the effect.
func (s *Store) changeCall(ch saga.Change, def string) *call {
	sh := s.l.shardOf(ch.SagaID)
	c := &call{}
	c.key("k", "saga", s.l.sagaKey(ch.SagaID))
	if s.l.cluster { // KEYS[2] and KEYS[3]: a commit finds the rest in the pending change
		c.key("k", "pending", s.l.pendingKey(ch.SagaID))
		c.key("k", "pendings", s.l.pendingsKey(sh))
	}
	// Only the keys the change may write: every key is more work for
	// Redis. A new saga is indexed by creation time, its definition
	// recorded and its business key set; a saga that ends is counted in
	// stats; an ended saga's business key expires with it, and lives on if
	// it is resumed (Allow holds an ended status).
	ends, resumes := false, false
	for _, m := range []*saga.Move{&ch.Success, ch.Failure} {
		ends = ends || m != nil && m.Status.Terminal()
	}
	for _, st := range ch.Allow {
		resumes = resumes || st.Terminal()
	}
	if ch.Create != nil {
		c.key("k", "created", s.l.indexKey(sh, def, "created"))
		c.key("k", "defs", s.l.defsKey(sh))
	}
	c.key("k", "due", s.l.indexKey(sh, def, "due"))
	for _, st := range saga.Statuses {
		if indexed(ch, st) {
			c.key("k", "s."+string(st), s.l.statusKey(sh, def, string(st)))
		}
	}
	if ends {
		c.key("k", "stats", s.l.indexKey(sh, def, "stats"))
	}
	key := ch.Key
	var create, accept, deadline, traceID string
	var data []byte
	if ch.Create != nil {
		create, data, deadline, traceID = "1", ch.Create.Data, strconv.FormatInt(ch.Create.Deadline.UnixMilli(), 10), ch.Create.TraceID
		accept = flag(ch.Create.Accept)
		if key == "" { // a new saga's; the start of an accepted one keeps its record's key (ch.Key)
			key = ch.Create.Key
		}
	}
	if key != "" && (ch.Create != nil || ends || resumes) {
		c.key("k", "key", s.l.businessKey(sh, def, key))
	}
	c.arg("dedupe", dedupeField(ch.Event.Source, ch.Event.ID))
	c.arg("now", s.now().UnixMilli())
	c.arg("create", create)
	c.arg("accept", accept)
	c.arg("version", ch.Version)
	c.arg("allow", allowList(ch.Allow))
	c.arg("step", ch.Step)
	c.arg("data", data)
	c.arg("deadline", deadline)
	c.arg("retention", int64(s.retention/time.Second))
	c.arg("saga", def)
	c.arg("id", ch.SagaID)
	c.arg("key", key)
	c.arg("trace", traceID)
	c.arg("etype", ch.Event.Type)
	c.arg("eid", ch.Event.ID)
	c.arg("esrc", ch.Event.Source)
	c.arg("actor", ch.Actor)
	c.arg("fail", flag(ch.Fail))
	c.arg("hasf", flag(ch.Failure != nil))
	c.arg("recent", s.recentCap())
	move(c, "s.", &ch.Success)
	if ch.Failure != nil {
		move(c, "f.", ch.Failure)
	}
	if dl := ch.DeadLetter; dl != nil {
		c.key("k", "dl", s.l.deadLetterKey(sh))
		c.key("k", "dlkept", s.keptMarker(sh, dl))
		c.arg("dl.id", "1")
		c.arg("dl.keep", int64(keptMarkerTTL/time.Second))
		c.arg("dl.max", s.deadLetterCap())
		c.arg("dl.dest", dl.Destination)
		c.arg("dl.code", dl.Code)
		c.arg("dl.body", dl.Body)
		c.arg("dl.reason", dl.Reason)
		c.arg("dl.handling", dl.Handling)
		c.arg("dl.event", dl.Event)
	}
	return c
}

// indexed reports whether a change may write the index of status st: the
// saga's status before it (one of Allow, or none for a new saga) and
// after it (a new saga's first, or a move's). The script gets only those
// keys: every key is more work for Redis.
func indexed(ch saga.Change, st saga.Status) bool {
	if ch.Success.Status == st || ch.Failure != nil && ch.Failure.Status == st || slices.Contains(ch.Allow, st) {
		return true
	}
	if ch.Create != nil {
		return st == saga.StatusRunning || ch.Create.Accept && st == saga.StatusAccepted
	}
	return false
}

// addEffect adds an effect's keys and arguments to a call.
func addEffect(c *call, e *saga.Call) {
	for _, k := range e.Keys {
		c.named("K", k, true)
	}
	for _, a := range e.Args {
		c.named("A", a, false)
	}
}

// applyOne applies a change as one script (with its effect, if any). On
// a Redis Cluster, a change another event left pending is resolved first
// (see cluster.go).
func (s *Store) applyOne(ctx context.Context, ch saga.Change, c *call, sc *redis.Script) (saga.Result, error) {
	for range changeAttempts {
		vals, err := s.evalStrings(ctx, sc, ch.Create != nil, c.keys, c.args...)
		if err != nil {
			return saga.Result{}, changeErr(ch, err)
		}
		if vals[0] == "busy" {
			if err := s.resolve(ctx, ch.SagaID, vals); err != nil {
				return saga.Result{}, err
			}
			continue
		}
		return parseResult(vals)
	}
	return saga.Result{}, errBusy(ch)
}

// changeErr wraps an error of a change's script: a Lua error (a bug, or a
// failed effect without a failure outcome) is permanent, anything else
// transient.
func changeErr(ch saga.Change, err error) error {
	if isScriptError(err) {
		return fmt.Errorf("saga %s change on %s: %w", ch.SagaID, ch.Event.Type, err)
	}
	return saga.Transient(err, "redis")
}

// move adds a move's arguments under prefix.
func move(c *call, prefix string, m *saga.Move) {
	var typ, rid, src string
	var data []byte
	own := ""
	if m.Emit != nil {
		typ, rid, src, data = m.Emit.Type, m.Emit.ID, m.Emit.Source, m.Emit.Data
		if data == nil {
			own = "1"
		}
	}
	due := "" // none
	if !m.Due.IsZero() {
		due = strconv.FormatInt(m.Due.UnixMilli(), 10)
	}
	for _, kv := range []struct {
		name string
		v    any
	}{
		{"outcome", m.Outcome}, {"status", string(m.Status)}, {"reason", m.Reason}, {"fstep", m.FailedStep}, {"push", flag(m.Push)},
		{"pop", m.Pop}, {"clear", flag(m.ClearStack)}, {"output", m.Output}, {"type", typ}, {"rid", rid},
		{"source", src}, {"data", data}, {"own", own}, {"due", due},
	} {
		c.arg(prefix+kv.name, kv.v)
	}
}

func allowList(allow []saga.Status) string {
	var b strings.Builder
	b.WriteByte(',')
	for _, st := range allow {
		b.WriteString(string(st))
		b.WriteByte(',')
	}
	return b.String()
}

// flag is a boolean argument: "1", or "" (left out) for false.
func flag(b bool) string {
	if b {
		return "1"
	}
	return ""
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
	for _, p := range []string{"LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "MOVED", "ASK",
		"OOM", "MISCONF", "NOREPLICAS", "ERR max number of clients reached"} {
		if strings.HasPrefix(msg, p) {
			return false
		}
	}
	return true
}

func parseResult(v []string) (saga.Result, error) {
	if len(v) != 9 {
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
		r.Reply = &saga.Emitted{Type: longType(v[4]), Time: time.UnixMilli(ms).UTC(), Data: []byte(v[6]), Source: v[8], Version: version}
	}
	return r, nil
}

// Get implements saga.Store.
func (s *Store) Get(ctx context.Context, sagaID string) (saga.State, error) {
	st, _, err := s.Load(ctx, sagaID, "", "")
	return st, err
}

// Load implements saga.Store.
func (s *Store) Load(ctx context.Context, sagaID, source, id string) (saga.State, *saga.Emitted, error) {
	m, err := s.rdb.HGetAll(ctx, s.l.sagaKey(sagaID)).Result()
	if err != nil {
		return saga.State{}, nil, saga.Transient(err, "redis")
	}
	if len(m) == 0 { // HGETALL answers an empty map, not redis.Nil, for a missing key
		return saga.State{}, nil, saga.ErrNotFound
	}
	st, err := parseState(sagaID, m)
	if err != nil {
		return saga.State{}, nil, err
	}
	if source == "" && id == "" {
		return st, nil, nil
	}
	stored, ok := m[dedupeField(source, id)]
	if !ok {
		return st, nil, nil
	}
	r, err := parseReply(m, st.CreatedAt, stored)
	if err != nil {
		return saga.State{}, nil, fmt.Errorf("saga %s: %w", sagaID, err)
	}
	r.ID = saga.ReplyID(source, id, r.Type)
	return st, r, nil
}

// parseReply reads a stored reply; its ID is the caller's to set.
func parseReply(m map[string]string, created time.Time, stored string) (*saga.Emitted, error) {
	p := strings.SplitN(stored, "\x1f", 7)
	if len(p) != 7 {
		return nil, errors.New("stored reply malformed")
	}
	v, err := strconv.ParseInt(p[0], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("stored reply version %q: %w", p[0], err)
	}
	r := &saga.Emitted{Type: longType(p[1]), Version: v, Source: p[5], Data: []byte(p[6])}
	if off, err := strconv.ParseInt(p[2], 10, 64); err == nil {
		r.Time = created.Add(time.Duration(off) * time.Millisecond)
	}
	if p[4] == "=" {
		r.Data = []byte(sagaData(m))
	}
	reason := ""
	if p[3] != "" {
		reason = m["x"+p[3]]
	}
	r.Data = saga.MergeReason(r.Data, reason)
	return r, nil
}

func sagaData(m map[string]string) string {
	n, _ := strconv.Atoi(m["dc"])
	var b strings.Builder
	for i := range n {
		b.WriteString(m["d"+strconv.Itoa(i)])
	}
	return b.String()
}

func parseState(id string, m map[string]string) (saga.State, error) {
	st := saga.State{
		ID: id, Saga: m["sg"], Key: m["k"], TraceID: m["tr"], Status: saga.Status(m["st"]), Step: m["sp"], Reason: m["rs"], FailedStep: m["fs"],
		Compensate: []string{}, Steps: []saga.StepRecord{},
	}
	var err error
	if st.Version, err = strconv.ParseInt(m["v"], 10, 64); err != nil {
		return saga.State{}, fmt.Errorf("saga %s: version %q: %w", id, m["v"], err)
	}
	st.CreatedAt, st.UpdatedAt, st.Deadline, st.Due = msTime(m["ca"]), msTime(m["ua"]), msTime(m["dl"]), msTime(m["du"])
	if d := sagaData(m); d != "" {
		st.Data = []byte(d)
	}
	if cp := m["cp"]; cp != "" {
		st.Compensate = strings.Split(cp, ",")
	}
	emitted := map[int64]string{} // version → type of the reply stored then
	type entry struct {
		n int
		r saga.StepRecord
	}
	var entries []entry
	for k, v := range m {
		switch {
		case strings.HasPrefix(k, "o."):
			if st.Outputs == nil {
				st.Outputs = map[string]json.RawMessage{}
			}
			st.Outputs[k[2:]] = []byte(v)
		case len(k) == 13 && k[0] == 'r':
			p := strings.SplitN(v, "\x1f", 3)
			if ver, err := strconv.ParseInt(p[0], 10, 64); err == nil && len(p) == 3 && p[1] != "" {
				emitted[ver] = longType(p[1])
			}
		case len(k) >= 2 && k[0] == 'l':
			n, err := strconv.Atoi(k[1:])
			if err != nil {
				continue
			}
			r, err := parseEntry(m, st.CreatedAt, n, v)
			if err != nil {
				return saga.State{}, fmt.Errorf("saga %s: %w", id, err)
			}
			entries = append(entries, entry{n, r})
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].n < entries[j].n })
	for _, e := range entries {
		if !e.r.Note {
			e.r.Emitted = emitted[e.r.Version]
		}
		st.Steps = append(st.Steps, e.r)
	}
	if nx := m["nx"]; nx != "" {
		field, rid, ok := strings.Cut(nx, "\x1f")
		stored, found := m[field]
		if !ok || !found {
			return saga.State{}, fmt.Errorf("saga %s: awaited event %q malformed", id, nx)
		}
		r, err := parseReply(m, st.CreatedAt, stored)
		if err != nil {
			return saga.State{}, fmt.Errorf("saga %s: awaited event: %w", id, err)
		}
		r.ID = rid
		st.Next = r
	}
	return st, nil
}

// parseEntry reads history entry n ("at|step|outcome|type|version|flags")
// and its companion fields.
func parseEntry(m map[string]string, created time.Time, n int, v string) (saga.StepRecord, error) {
	p := strings.SplitN(v, "|", 6)
	if len(p) != 6 {
		return saga.StepRecord{}, fmt.Errorf("history entry %d malformed", n)
	}
	off, _ := strconv.ParseInt(p[0], 10, 64)
	ver, _ := strconv.ParseInt(p[4], 10, 64)
	r := saga.StepRecord{At: created.Add(time.Duration(off) * time.Millisecond), Step: p[1], Outcome: p[2],
		EventType: longType(p[3]), Version: ver, Note: strings.Contains(p[5], "n")}
	ns := strconv.Itoa(n)
	if strings.Contains(p[5], "r") {
		r.Reason = m["x"+p[4]]
	}
	if r.Note {
		r.Reason = m["y"+ns]
	} else {
		r.Redelivered, _ = strconv.Atoi(m["c"+p[4]])
	}
	r.EventID, r.EventSource, _ = strings.Cut(m["e"+ns], "\x1f")
	r.Actor = m["a"+ns]
	return r, nil
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

// Note implements saga.Store.
func (s *Store) Note(ctx context.Context, sagaID string, r saga.StepRecord) error {
	at := r.At
	if at.IsZero() {
		at = s.now()
	}
	n, err := noteScript.Run(ctx, s.rdb, []string{s.l.sagaKey(sagaID)}, at.UnixMilli(), r.Step, r.Outcome, r.EventType,
		r.EventID, r.EventSource, r.Actor, r.Reason).Int()
	if err != nil {
		return saga.Transient(err, "redis")
	}
	if n == 0 {
		return saga.ErrNotFound
	}
	return nil
}

// Reschedule sets when the deadline sweeper looks at an unfinished saga
// next, if it is still at version; it reports whether it did.
func (s *Store) Reschedule(ctx context.Context, def, sagaID string, version int64, due time.Time) (bool, error) {
	n, err := rescheduleScript.Run(ctx, s.rdb, []string{s.l.sagaKey(sagaID), s.l.indexKey(s.l.shardOf(sagaID), def, "due")}, version, due.UnixMilli(), sagaID).Int()
	if err != nil {
		return false, saga.Transient(err, "redis")
	}
	return n == 1, nil
}
