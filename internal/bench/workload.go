package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

// Workload is the saga `ksaga bench` drives and everything the bench knows
// about it: how a saga of each kind starts and must end, the data it needs,
// the keys it leaves in Redis besides its record, how each function is
// probed for its cold start, and which Redis commands belong to one step
// type. The rest of the package knows no saga. OrderSaga is the only value.
type Workload struct {
	// Def is the saga's definition: its name for the store's queries, and
	// which event types are its steps (a function's events of other types,
	// such as the sweeper's pings, are not counted as steps).
	Def *saga.Definition
	// Manifests are the folders, relative to the project folder, that
	// `ksaga dev -f` runs the saga from in a mode (choreography or
	// orchestration), with or without sender identity (its EventPolicies).
	Manifests func(mode string, oidc bool) []string
	// Namespace and Broker name the Broker the saga's events go through:
	// the bench starts sagas at its ingress and subscribes to the terminal
	// events with Triggers of its own.
	Namespace, Broker string
	// Kinds are the sagas of the mix, in --mix order. The first one's path
	// reaches every step function: the from-zero phase runs it.
	Kinds []Kind
	// Mix are the default weights of the kinds.
	Mix []float64
	// Seed writes the bench's data into Redis before ksaga dev starts.
	Seed func(ctx context.Context, rdb redis.UniversalClient) error
	// Related are the keys the functions write for one saga besides its
	// record (the store's), for the memory figures.
	Related []RelatedKey
	// Streams hold one entry per saga (an outbox): their size ÷ length is
	// added to each saga's memory.
	Streams []Stream
	// Probes are, by function, a request it answers 2xx once it serves
	// (cold start); a function without one is probed with GET /readyz.
	Probes map[string]Probe
	// EventData is the data of a typical event of the saga: the body of the
	// floor's requests and of the cold-start probes.
	EventData []byte
	// Extras are Redis commands a function sends for one of its step types
	// only, so that step's round trips can be told from its others.
	Extras []StepExtra
	// CPUNote says what ksaga-dev's CPU includes besides the broker and its
	// ingress, for the report.
	CPUNote string
}

// Kind is one kind of saga in the mix.
type Kind struct {
	Name  string // in the report and the JSON, e.g. "happy"
	Label string // in the report's mix line, e.g. "payment fails"
	Start string // the start command's event type
	Data  []byte // the start command's data
	End   string // the terminal event the saga must end with
}

// RelatedKey is a key the functions write for a saga.
type RelatedKey struct {
	Pattern string                  // as the report shows it, e.g. "order:o:<order id>"
	Key     func(saga.State) string // the saga's key ("": it has none)
}

// Stream is a stream holding one entry per saga.
type Stream struct {
	Key   string
	About string // what it is and how it is bounded, for the report
}

// Probe is how a function is probed for its first 2xx: GET Get, or POST a
// binary-mode CloudEvent of Type naming a saga the store does not know
// (answered 200 without a reply).
type Probe struct {
	Get  string
	Type string
}

func (p Probe) String() string {
	if p.Get != "" {
		return "GET " + p.Get
	}
	return "POST binary CE " + p.Type + " (unknown saga: 200, no reply)"
}

// StepExtra names the Redis commands a function sends only when it runs
// one step type, and the functions it calls synchronously for it.
type StepExtra struct {
	Function string   // e.g. "order"
	Step     string   // the step's name in the report, e.g. "create"
	Types    []string // the event types of that step
	Commands []string // top-level commands (lower case) only that step sends
	Callees  []string // functions it calls for that step: their step-path round trips count toward it
}

// terminalTypes are the distinct terminal events of the kinds, in order.
func (w *Workload) terminalTypes() []string {
	var out []string
	seen := map[string]bool{}
	for _, k := range w.Kinds {
		if !seen[k.End] {
			seen[k.End] = true
			out = append(out, k.End)
		}
	}
	return out
}

// kind returns the kind named name.
func (w *Workload) kind(name string) (Kind, bool) {
	for _, k := range w.Kinds {
		if k.Name == name {
			return k, true
		}
	}
	return Kind{}, false
}

// kindNames are the kinds' names, in --mix order.
func (w *Workload) kindNames() []string {
	out := make([]string, len(w.Kinds))
	for i, k := range w.Kinds {
		out[i] = k.Name
	}
	return out
}

// kindLabels are the kinds' labels, in --mix order.
func (w *Workload) kindLabels() []string {
	out := make([]string, len(w.Kinds))
	for i, k := range w.Kinds {
		out[i] = k.Label
	}
	return out
}

// isStep reports whether a function's event of type typ is a step: an
// event of the saga (the sweeper's pings are not).
func (w *Workload) isStep(typ string) bool {
	return slices.Contains(w.Def.Types(), typ)
}

// isFinal reports whether an event of type typ runs the saga's final step,
// which runs after its terminal event.
func (w *Workload) isFinal(typ string) bool {
	r, ok := w.Def.Route(typ)
	return ok && r.Kind == saga.Final
}

// The order saga's bench data: a rich user and a huge book stock so that
// happy sagas never run out, a broke user (payment fails → compensated),
// and a lamp stock of 1 that orders of 2 lamps never get (inventory fails →
// refund → cancel).
const (
	richUser  = int32(9001)
	brokeUser = int32(9002)
	bookPrice = 1250
	lampPrice = 4999
	huge      = int64(1_000_000_000_000_000)
)

// OrderSaga is the reference order saga as the bench drives it.
var OrderSaga = &Workload{
	Def: ordersaga.Saga,
	Manifests: func(mode string, oidc bool) []string {
		paths := []string{filepath.Join("brokers", "mt-channel"), filepath.Join("triggers", mode), "manifests"}
		if oidc {
			paths = append(paths, "policies")
		}
		return paths
	},
	Namespace: "saga", Broker: "default",
	Kinds: []Kind{
		{Name: "happy", Label: "happy", Start: ordersaga.Create, End: ordersaga.Confirmed,
			Data: []byte(`{"user_id":9001,"items":[{"sku":"book","qty":1}]}`)},
		{Name: "payment_fail", Label: "payment fails", Start: ordersaga.Create, End: ordersaga.Cancelled,
			Data: []byte(`{"user_id":9002,"items":[{"sku":"book","qty":1}]}`)},
		{Name: "inventory_fail", Label: "inventory fails", Start: ordersaga.Create, End: ordersaga.Cancelled,
			Data: []byte(`{"user_id":9001,"items":[{"sku":"lamp","qty":2}]}`)},
	},
	Mix: []float64{80, 10, 10},
	Seed: func(ctx context.Context, rdb redis.UniversalClient) error {
		// Not a transaction: on a Redis Cluster the keys are on several
		// nodes, and nothing runs on them before ksaga dev starts.
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, ordersaga.UserKey(richUser), "username", "bench-rich", "email", "rich@bench.invalid")
			p.HSet(ctx, ordersaga.UserKey(brokeUser), "username", "bench-broke", "email", "broke@bench.invalid")
			p.Set(ctx, ordersaga.BalanceKey(richUser), huge, 0)
			p.Set(ctx, ordersaga.BalanceKey(brokeUser), 0, 0)
			p.Set(ctx, ordersaga.CatalogKey("book"), bookPrice, 0)
			p.Set(ctx, ordersaga.CatalogKey("lamp"), lampPrice, 0)
			p.Set(ctx, ordersaga.StockKey("book"), huge, 0)
			p.Set(ctx, ordersaga.StockKey("lamp"), 1, 0)
			return nil
		})
		if err != nil {
			return fmt.Errorf("seed bench data: %w", err)
		}
		return nil
	},
	// The order record is keyed by the saga's business key, its order id.
	Related: []RelatedKey{{Pattern: "order:o:<order id>", Key: func(st saga.State) string {
		if st.Key == "" {
			return ""
		}
		return ordersaga.OrderKey(st.Key)
	}}},
	Streams: []Stream{{Key: ordersaga.OutboxKey, About: "notification outbox entry (stream; the relay trims sent entries past 100,000)"}},
	Probes: map[string]Probe{
		"order":        {Type: ordersaga.Confirm},
		"payment":      {Type: ordersaga.AuthorizePay},
		"inventory":    {Type: ordersaga.ReserveStock},
		"notification": {Type: ordersaga.SendNotification},
		"orchestrator": {Type: ordersaga.Created},
		"users":        {Get: "/healthz"}, // gRPC only: no CloudEvents step
	},
	EventData: []byte(`{"order_id":"53d3aa06-00da-5556-9c56-19b8fea8b0ef","user_id":9001,"items":[{"sku":"book","qty":1,"price_cents":1250}],"total_cents":1250}`),
	// Only order's create step prices the order (the catalogue's MGET,
	// cached for 5 s) and looks its user up (a gRPC call to users, whose
	// HGETALL it caches for 30 s).
	Extras: []StepExtra{{Function: "order", Step: "create", Types: []string{ordersaga.Create},
		Commands: []string{"mget"}, Callees: []string{"users"}}},
	CPUNote: "ksaga-dev is the broker, its ingress and the ingress's proxy of order's gRPC calls to users",
}
