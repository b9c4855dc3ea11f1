package sagatest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/saga"
)

// NewStore returns a fresh store for one test, with the Redis its effects
// write to, and the retention it keeps finished sagas for.
type NewStore func(t *testing.T) (saga.Store, redis.UniversalClient)

// StoreSuite is the conformance suite of saga.Store: every implementation
// (one Redis primary, a Redis Cluster) must pass it. Each case gets its
// own store from newStore.
func StoreSuite(t *testing.T, newStore NewStore) {
	for name, tc := range map[string]func(t *testing.T, s saga.Store, rdb redis.UniversalClient){
		"create":              suiteCreate,
		"duplicate":           suiteDuplicate,
		"compare and set":     suiteCAS,
		"effects by name":     suiteEffects,
		"compensation stack":  suiteStack,
		"accept then start":   suiteAccept,
		"list and page":       suiteList,
		"due and stats":       suiteDue,
		"dead letters":        suiteDeadLetters,
		"notes":               suiteNotes,
		"business key reused": suiteKeyReused,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, rdb := newStore(t)
			tc(t, s, rdb)
		})
	}
}

// suiteDef is the definition the suite's changes belong to.
const suiteDef = "suite"

var ctx = context.Background()

func create(id string, data string) saga.Change {
	return saga.Change{SagaID: id, Saga: suiteDef, Event: saga.EventRef{Source: "/test", ID: id + "-start", Type: "t.start"},
		Create: &saga.Create{Saga: suiteDef, Key: "key-" + id, Data: []byte(data), Deadline: time.Now().Add(time.Hour)},
		Step:   "a", Allow: []saga.Status{saga.StatusAccepted},
		Success: saga.Move{Outcome: "created", Status: saga.StatusRunning, Push: true,
			Emit: &saga.Emit{Type: "t.a.done", ID: id + "-r1", Source: "/a"}, Due: time.Now().Add(time.Minute)}}
}

// next is a forward change at version v by step, emitting typ.
func next(id string, v int64, step, typ string) saga.Change {
	return saga.Change{SagaID: id, Saga: suiteDef, Event: saga.EventRef{Source: "/test", ID: fmt.Sprintf("%s-e%d", id, v), Type: "t.in"},
		Version: v, Allow: []saga.Status{saga.StatusRunning}, Step: step,
		Success: saga.Move{Outcome: "done", Status: saga.StatusRunning, Push: true, Emit: &saga.Emit{Type: typ, ID: fmt.Sprintf("%s-r%d", id, v+1), Source: "/" + step}}}
}

func mustApply(t *testing.T, s saga.Store, c saga.Change) saga.Result {
	t.Helper()
	r, err := s.Apply(ctx, c)
	if err != nil {
		t.Fatalf("apply %s: %v", c.Event.ID, err)
	}
	return r
}

func mustGet(t *testing.T, s saga.Store, id string) saga.State {
	t.Helper()
	st, err := s.Get(ctx, id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return st
}

func suiteCreate(t *testing.T, s saga.Store, _ redis.UniversalClient) {
	r := mustApply(t, s, create("s1", `{"n":1}`))
	if !r.Applied || r.Version != 1 || r.Status != saga.StatusRunning || r.From != "" || r.Reply == nil || r.Reply.ID != "s1-r1" || string(r.Reply.Data) != `{"n":1}` {
		t.Fatalf("create: %+v %+v", r, r.Reply)
	}
	st := mustGet(t, s, "s1")
	if st.Saga != suiteDef || st.Key != "key-s1" || st.Status != saga.StatusRunning || st.Version != 1 || string(st.Data) != `{"n":1}` ||
		!slices.Equal(st.Compensate, []string{"a"}) || len(st.Steps) != 1 || st.Steps[0].Outcome != "created" || st.Steps[0].EventID != "s1-start" ||
		st.Steps[0].Emitted != "t.a.done" || st.Next == nil || st.Next.ID != "s1-r1" || st.Next.Version != 1 || st.Next.Source != "/a" {
		t.Fatalf("record: %+v next %+v", st, st.Next)
	}
	if r := mustApply(t, s, create("s1", `{}`)); r.Skipped == "" {
		// the same event is a duplicate, not a second create
		if !r.Duplicate {
			t.Fatalf("second create: %+v", r)
		}
	}
	other := create("s1", `{}`)
	other.Event.ID = "another"
	if r := mustApply(t, s, other); r.Skipped != "exists" {
		t.Fatalf("a second create of the same saga by another event: %+v", r)
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, saga.ErrNotFound) {
		t.Fatalf("unknown saga: %v", err)
	}
	if id, err := s.ByKey(ctx, suiteDef, "key-s1"); err != nil || id != "s1" {
		t.Fatalf("by key: %q %v", id, err)
	}
	// large data survives chunking
	big := `{"x":"` + string(slices.Repeat([]byte("y"), 5000)) + `"}`
	mustApply(t, s, create("big", big))
	if st := mustGet(t, s, "big"); string(st.Data) != big {
		t.Fatalf("large data: %d bytes back", len(st.Data))
	}
}

func suiteDuplicate(t *testing.T, s saga.Store, _ redis.UniversalClient) {
	mustApply(t, s, create("d1", `{"n":1}`))
	c := next("d1", 1, "b", "t.b.done")
	first := mustApply(t, s, c)
	again := mustApply(t, s, c)
	if !again.Duplicate || again.Reply == nil || again.Reply.Type != first.Reply.Type || again.Version != first.Version ||
		string(again.Reply.Data) != string(first.Reply.Data) || !again.Reply.Time.Equal(first.Reply.Time) {
		t.Fatalf("duplicate: %+v / first %+v", again, first)
	}
	st, dup, err := s.Load(ctx, "d1", c.Event.Source, c.Event.ID)
	if err != nil || dup == nil || dup.Type != "t.b.done" || dup.Version != 2 || st.Version != 2 {
		t.Fatalf("load: %v %+v %v", st.Version, dup, err)
	}
	if st.Steps[1].Redelivered != 1 {
		t.Fatalf("redeliveries counted: %+v", st.Steps[1])
	}
	if _, dup, _ := s.Load(ctx, "d1", "/other", "x"); dup != nil {
		t.Fatalf("an event never applied has no stored reply: %+v", dup)
	}
}

func suiteCAS(t *testing.T, s saga.Store, _ redis.UniversalClient) {
	mustApply(t, s, create("c1", `{}`))
	for name, c := range map[string]saga.Change{
		"version": next("c1", 5, "b", "t.b.done"),
		"status": func() saga.Change {
			c := next("c1", 1, "b", "t.b.done")
			c.Allow = []saga.Status{saga.StatusCompensating}
			return c
		}(),
		"saga": func() saga.Change { c := next("c1", 1, "b", "t.b.done"); c.Saga = "other"; return c }(),
		"unknown saga": func() saga.Change {
			c := next("c1", 1, "b", "t.b.done")
			c.SagaID = "nope"
			return c
		}(),
	} {
		if r := mustApply(t, s, c); r.Skipped != name || r.Applied {
			t.Errorf("%s: %+v", name, r)
		}
	}
	if st := mustGet(t, s, "c1"); st.Version != 1 || len(st.Steps) != 1 {
		t.Fatalf("a refused change changed the saga: %+v", st)
	}
}

var suiteEffect = saga.Effect{Name: "suite.effect", Lua: `
for i, key in ipairs(keys.list or {}) do
  if tonumber(args.qty[i]) < 0 then return 'negative ' .. args.sku[i] end
end
redis.call('SET', keys.one, args.value)
for i, key in ipairs(keys.list or {}) do redis.call('INCRBY', key, args.qty[i]) end
`}

func suiteEffects(t *testing.T, s saga.Store, rdb redis.UniversalClient) {
	mustApply(t, s, create("e1", `{}`))
	c := next("e1", 1, "b", "t.b.done")
	c.Effect = suiteEffect.Call().Key("one", "suite:{fx}:one").KeyList("list", "suite:{fx}:x", "suite:{fx}:y").ArgList("qty", 2, 3).ArgList("sku", "x", "y").Arg("value", "v1")
	c.Success.Output = []byte(`{"charged":5}`)
	c.Failure = &saga.Move{Outcome: "failed", Status: saga.StatusCompensating, Emit: &saga.Emit{Type: "t.b.failed", ID: "e1-f", Source: "/b"}}
	r := mustApply(t, s, c)
	if !r.Applied || r.Failed {
		t.Fatalf("effect: %+v", r)
	}
	if v, _ := rdb.Get(ctx, "suite:{fx}:one").Result(); v != "v1" {
		t.Fatalf("effect's key: %q", v)
	}
	if x, _ := rdb.Get(ctx, "suite:{fx}:x").Int(); x != 2 {
		t.Fatalf("effect's list key x: %d", x)
	}
	if y, _ := rdb.Get(ctx, "suite:{fx}:y").Int(); y != 3 {
		t.Fatalf("effect's list key y: %d", y)
	}
	var out struct{ Charged int }
	if ok, err := mustGet(t, s, "e1").Output("b", &out); !ok || err != nil || out.Charged != 5 {
		t.Fatalf("output: %v %v %+v", ok, err, out)
	}
	// a business failure: the failure move, its reason, no output, nothing written
	c = next("e1", 2, "c", "t.c.done")
	c.Effect = suiteEffect.Call().Key("one", "suite:{fx}:two").KeyList("list", "suite:{fx}:x").ArgList("qty", -1).ArgList("sku", "x").Arg("value", "v2")
	c.Success.Output = []byte(`{"no":1}`)
	c.Failure = &saga.Move{Outcome: "failed", Status: saga.StatusCompensating, Emit: &saga.Emit{Type: "t.c.failed", ID: "e1-f2", Source: "/c"}}
	r = mustApply(t, s, c)
	if !r.Failed || r.Reason != "negative x" || r.Status != saga.StatusCompensating || r.Reply.Type != "t.c.failed" {
		t.Fatalf("failure: %+v", r)
	}
	st := mustGet(t, s, "e1")
	if _, has := st.Outputs["c"]; has || st.Reason != "negative x" || st.FailedStep != "c" {
		t.Fatalf("after a failure: outputs %v reason %q step %q", st.Outputs, st.Reason, st.FailedStep)
	}
	var failure map[string]any
	if json.Unmarshal(r.Reply.Data, &failure) != nil || failure["reason"] != "negative x" {
		t.Fatalf("the failure reply carries its reason: %s", r.Reply.Data)
	}
	if n, _ := rdb.Exists(ctx, "suite:{fx}:two").Result(); n != 0 {
		t.Fatalf("a failing effect wrote")
	}
	// a failure without a failure move is an error and changes nothing
	c = saga.Change{SagaID: "e1", Saga: suiteDef, Event: saga.EventRef{Source: "/t", ID: "nofail", Type: "t"}, Version: 3,
		Allow: []saga.Status{saga.StatusCompensating}, Step: "c",
		Effect:  suiteEffect.Call().Key("one", "suite:{fx}:three").KeyList("list", "suite:{fx}:x").ArgList("qty", -1).ArgList("sku", "x").Arg("value", "v"),
		Success: saga.Move{Outcome: "undone"}}
	if _, err := s.Apply(ctx, c); err == nil {
		t.Fatal("an effect failing without a failure move must be an error")
	}
	if mustGet(t, s, "e1").Version != 3 {
		t.Fatal("the failed change moved the saga")
	}
	// Fail: the effect runs, the failure move applies
	mustApply(t, s, create("e2", `{}`))
	c = next("e2", 1, "b", "t.b.done")
	c.Effect = suiteEffect.Call().Key("one", "suite:{fx}:e2").Arg("value", "written")
	c.Fail = true
	c.Failure = &saga.Move{Outcome: "rejected", Status: saga.StatusCompensating, Reason: "decided", Emit: &saga.Emit{Type: "t.b.failed", ID: "e2-f", Source: "/b"}}
	if r := mustApply(t, s, c); !r.Failed || r.Reason != "decided" {
		t.Fatalf("fail: %+v", r)
	}
	if v, _ := rdb.Get(ctx, "suite:{fx}:e2").Result(); v != "written" {
		t.Fatalf("Fail still runs the effect: %q", v)
	}
}

func suiteStack(t *testing.T, s saga.Store, _ redis.UniversalClient) {
	mustApply(t, s, create("k1", `{}`))
	mustApply(t, s, next("k1", 1, "b", "t.b.done"))
	fail := next("k1", 2, "c", "t.c.failed")
	fail.Success.Push, fail.Success.Status = false, saga.StatusCompensating
	mustApply(t, s, fail)
	if st := mustGet(t, s, "k1"); !slices.Equal(st.Compensate, []string{"b", "a"}) {
		t.Fatalf("stack: %v", st.Compensate)
	}
	undo := func(v int64, step string) saga.Change {
		return saga.Change{SagaID: "k1", Saga: suiteDef, Event: saga.EventRef{Source: "/t", ID: "undo-" + step, Type: "t.undo"},
			Version: v, Allow: []saga.Status{saga.StatusCompensating}, Step: step,
			Success: saga.Move{Outcome: "undone", Pop: step, Emit: &saga.Emit{Type: "t." + step + ".undone", ID: "u-" + step, Source: "/" + step}}}
	}
	if r := mustApply(t, s, undo(3, "a")); r.Skipped != "stack" {
		t.Fatalf("undoing a step that is not on top: %+v", r)
	}
	mustApply(t, s, undo(3, "b"))
	last := undo(4, "a")
	last.Success.Status = saga.StatusCompensated
	r := mustApply(t, s, last)
	st := mustGet(t, s, "k1")
	if r.Status != saga.StatusCompensated || len(st.Compensate) != 0 || !st.Due.IsZero() {
		t.Fatalf("compensated: %+v %+v", r, st)
	}
	mustApply(t, s, create("k2", `{}`))
	done := next("k2", 1, "b", "t.done")
	done.Success.Status, done.Success.ClearStack, done.Success.Push = saga.StatusCompleted, true, false
	mustApply(t, s, done)
	if st := mustGet(t, s, "k2"); st.Status != saga.StatusCompleted || len(st.Compensate) != 0 {
		t.Fatalf("a completed saga has nothing left to undo: %+v", st.Compensate)
	}
}

func suiteAccept(t *testing.T, s saga.Store, _ redis.UniversalClient) {
	acc := create("a1", `{"req":1}`)
	acc.Event.ID = "a1-start.accept"
	acc.Create.Accept = true
	acc.Success = saga.Move{Outcome: "accepted", Status: saga.StatusAccepted,
		Emit: &saga.Emit{Type: "t.start", ID: "a1-start", Source: "/api", Data: []byte(`{"req":1}`)}, Due: time.Now().Add(time.Second)}
	r := mustApply(t, s, acc)
	if r.Status != saga.StatusAccepted || r.Version != 1 {
		t.Fatalf("accept: %+v", r)
	}
	if r := mustApply(t, s, acc); !r.Duplicate {
		t.Fatalf("accepting again: %+v", r)
	}
	st := mustGet(t, s, "a1")
	if st.Next == nil || st.Next.ID != "a1-start" || string(st.Next.Data) != `{"req":1}` {
		t.Fatalf("an accepted saga waits on its start command: %+v", st.Next)
	}
	start := create("a1", `{"priced":2}`)
	start.Version = 1
	r = mustApply(t, s, start)
	if !r.Applied || r.Status != saga.StatusRunning || r.Version != 2 {
		t.Fatalf("start of an accepted saga: %+v", r)
	}
	if st := mustGet(t, s, "a1"); string(st.Data) != `{"priced":2}` || st.Key != "key-a1" {
		t.Fatalf("the start records the data it runs with: %s", st.Data)
	}
	again := create("a1", `{}`)
	again.Event.ID, again.Version = "other", 2
	if r := mustApply(t, s, again); r.Skipped != "exists" {
		t.Fatalf("a running saga does not start again: %+v", r)
	}
}

func suiteList(t *testing.T, s saga.Store, _ redis.UniversalClient) {
	for i := range 7 {
		mustApply(t, s, create("l"+strconv.Itoa(i), `{}`))
	}
	fail := next("l3", 1, "b", "t.b.failed")
	fail.Success.Status = saga.StatusCompensating
	mustApply(t, s, fail)
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		p, err := s.List(ctx, saga.Query{Saga: suiteDef, Limit: 3, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range p.Sagas {
			got = append(got, st.ID)
		}
		if p.Next == "" {
			break
		}
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		cursor = p.Next
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"l0", "l1", "l2", "l3", "l4", "l5", "l6"}) {
		t.Fatalf("paged through: %v", got)
	}
	p, err := s.List(ctx, saga.Query{Saga: suiteDef, Status: []saga.Status{saga.StatusCompensating}})
	if err != nil || len(p.Sagas) != 1 || p.Sagas[0].ID != "l3" {
		t.Fatalf("by status: %+v %v", p, err)
	}
	p, err = s.List(ctx, saga.Query{Saga: suiteDef, From: time.Now().Add(time.Hour)})
	if err != nil || len(p.Sagas) != 0 {
		t.Fatalf("created in the future: %+v %v", p, err)
	}
	if _, err := s.List(ctx, saga.Query{Cursor: "garbage"}); saga.Code(err) != saga.EInvalid {
		t.Fatalf("a bad cursor is invalid: %v", err)
	}
}

func suiteDue(t *testing.T, s saga.Store, _ redis.UniversalClient) {
	soon := create("u1", `{}`)
	soon.Success.Due = time.Now().Add(-time.Second)
	mustApply(t, s, soon)
	mustApply(t, s, create("u2", `{}`)) // due in a minute
	ids, err := s.Due(ctx, time.Now(), 10)
	if err != nil || !slices.Equal(ids, []string{"u1"}) {
		t.Fatalf("due: %v %v", ids, err)
	}
	if ids, err := s.Due(ctx, time.Now(), 10, suiteDef); err != nil || !slices.Equal(ids, []string{"u1"}) {
		t.Fatalf("due of %s: %v %v", suiteDef, ids, err)
	}
	if ids, err := s.Due(ctx, time.Now(), 10, "another"); err != nil || len(ids) != 0 {
		t.Fatalf("due of another definition: %v %v", ids, err)
	}
	if ok, err := s.Reschedule(ctx, suiteDef, "u1", 7, time.Now().Add(time.Hour)); err != nil || ok {
		t.Fatalf("reschedule at a stale version: %v %v", ok, err)
	}
	if ok, err := s.Reschedule(ctx, suiteDef, "u1", 1, time.Now().Add(time.Hour)); err != nil || !ok {
		t.Fatalf("reschedule: %v %v", ok, err)
	}
	if ids, _ := s.Due(ctx, time.Now(), 10); len(ids) != 0 {
		t.Fatalf("rescheduled, still due: %v", ids)
	}
	p, err := s.List(ctx, saga.Query{Saga: suiteDef, Overdue: true, Now: time.Now().Add(2 * time.Hour)})
	if err != nil || len(p.Sagas) != 2 {
		t.Fatalf("overdue in two hours: %+v %v", p, err)
	}
	done := next("u2", 1, "b", "t.done")
	done.Success.Status = saga.StatusCompleted
	mustApply(t, s, done)
	if ids, _ := s.Due(ctx, time.Now().Add(24*time.Hour), 10); !slices.Equal(ids, []string{"u1"}) {
		t.Fatalf("a finished saga is never due: %v", ids)
	}
	st, err := s.Stats(ctx, suiteDef, time.Now())
	if err != nil || st.ByStatus[saga.StatusRunning] != 1 || st.ByStatus[saga.StatusCompleted] != 1 || len(st.Recent) != 1 || st.Recent[0].Status != saga.StatusCompleted {
		t.Fatalf("stats: %+v %v", st, err)
	}
}

func suiteDeadLetters(t *testing.T, s saga.Store, _ redis.UniversalClient) {
	dl := saga.DeadLetter{SagaID: "x1", EventType: "t.a", EventID: "e1", EventSource: "/s", Destination: "http://a", Code: "500",
		Reason: "it failed", Handling: "kept", Event: []byte(`{"specversion":"1.0","id":"e1","source":"/s","type":"t.a"}`)}
	if ok, err := s.KeepDeadLetter(ctx, dl); err != nil || !ok {
		t.Fatalf("keep: %v %v", ok, err)
	}
	if ok, err := s.KeepDeadLetter(ctx, dl); err != nil || ok {
		t.Fatalf("a redelivered dead letter is kept once: %v %v", ok, err)
	}
	// Dead letters are newest first by the time Redis kept them; two kept
	// in the same millisecond on different shards of a Redis Cluster have
	// no order between them, so each is kept in a later millisecond.
	nextMilli()
	other := dl
	other.SagaID, other.EventID, other.EventType = "x2", "e2", "t.b"
	if _, err := s.KeepDeadLetter(ctx, other); err != nil {
		t.Fatal(err)
	}
	nextMilli()
	// with a change, atomically
	mustApply(t, s, create("x3", `{}`))
	c := next("x3", 1, "b", "t.b.failed")
	c.DeadLetter = &saga.DeadLetter{SagaID: "x3", EventType: "t.in", EventID: "x3-e1", EventSource: "/test", Handling: "failed", Reason: "unreachable"}
	mustApply(t, s, c)
	all, err := s.DeadLetters(ctx, saga.DeadLetterQuery{})
	if err != nil || len(all.DeadLetters) != 3 || all.DeadLetters[0].SagaID != "x3" {
		t.Fatalf("all, newest first: %+v %v", all, err)
	}
	byType, err := s.DeadLetters(ctx, saga.DeadLetterQuery{Type: "t.b"})
	if err != nil || len(byType.DeadLetters) != 1 || byType.DeadLetters[0].EventID != "e2" {
		t.Fatalf("by type: %+v %v", byType, err)
	}
	page, err := s.DeadLetters(ctx, saga.DeadLetterQuery{Limit: 2})
	if err != nil || len(page.DeadLetters) != 2 || page.Next == "" {
		t.Fatalf("page: %+v %v", page, err)
	}
	rest, err := s.DeadLetters(ctx, saga.DeadLetterQuery{Limit: 2, Cursor: page.Next})
	if err != nil || len(rest.DeadLetters) != 1 || rest.DeadLetters[0].EventID != "e1" {
		t.Fatalf("next page: %+v %v", rest, err)
	}
	id := rest.DeadLetters[0].ID
	if err := s.MarkReplayed(ctx, id, "alice", time.Now()); err != nil {
		t.Fatal(err)
	}
	got, err := s.DeadLetter(ctx, id)
	if err != nil || got.ReplayedBy != "alice" || got.ReplayedAt.IsZero() || string(got.Event) != string(dl.Event) {
		t.Fatalf("one dead letter: %+v %v", got, err)
	}
	if _, err := s.DeadLetter(ctx, "0-0"); !errors.Is(err, saga.ErrNotFound) {
		t.Fatalf("unknown dead letter: %v", err)
	}
}

func suiteNotes(t *testing.T, s saga.Store, _ redis.UniversalClient) {
	mustApply(t, s, create("n1", `{}`))
	if err := s.Note(ctx, "n1", saga.StepRecord{Outcome: "dead_letter_replayed", EventType: "t.a", EventID: "e9", Actor: "bob", Reason: "dead letter 1-0"}); err != nil {
		t.Fatal(err)
	}
	st := mustGet(t, s, "n1")
	last := st.Steps[len(st.Steps)-1]
	if st.Version != 1 || !last.Note || last.Actor != "bob" || last.Reason != "dead letter 1-0" || last.EventID != "e9" || st.Next == nil {
		t.Fatalf("a note does not move the saga: %+v %+v", st, last)
	}
	if err := s.Note(ctx, "nope", saga.StepRecord{Outcome: "x"}); !errors.Is(err, saga.ErrNotFound) {
		t.Fatalf("note of an unknown saga: %v", err)
	}
}

// nextMilli returns once the clock has moved to a later millisecond than
// the one it was called in, plus one (a Redis server on this machine has
// then moved past it too).
func nextMilli() {
	for t0 := time.Now().UnixMilli(); time.Now().UnixMilli() < t0+2; {
		runtime.Gosched()
	}
}

// suiteKeyReused: a business key given to a newer saga (the same order
// submitted again) finds the newer saga, wherever the two are kept.
func suiteKeyReused(t *testing.T, s saga.Store, _ redis.UniversalClient) {
	for i := range 8 {
		older, newer, key := fmt.Sprintf("older-%d", i), fmt.Sprintf("newer-%d", i), fmt.Sprintf("reused-%d", i)
		for _, id := range []string{older, newer} {
			c := create(id, `{}`)
			c.Create.Key = key
			mustApply(t, s, c)
			nextMilli()
		}
		if id, err := s.ByKey(ctx, suiteDef, key); err != nil || id != newer {
			t.Errorf("by key %s: %q %v, want the newer saga %s", key, id, err, newer)
		}
	}
}
