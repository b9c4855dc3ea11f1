package bench

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/saga"
)

// TestOnlyTheWorkloadKnowsTheSaga: every name of the order saga — its
// package, its event types, its functions, its Redis keys — is in
// workload.go; the rest of the bench drives whatever Workload it is given.
func TestOnlyTheWorkloadKnowsTheSaga(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	sagaWords := []string{"order", "payment", "inventory", "notification", "users", "happy"}
	// Its event types and its functions' Redis keys.
	sagaNames := regexp.MustCompile(`io\.ksaga\.(order|payment|inventory|notification)\.|\b(order|payment|inventory|notification|users):[a-z{]`)
	checked := 0
	for _, f := range files {
		if f == "workload.go" || strings.HasSuffix(f, "_test.go") {
			continue
		}
		fset := token.NewFileSet()
		file, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range file.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); strings.HasSuffix(p, "/ordersaga") || strings.Contains(p, "/ordersaga/") {
				t.Errorf("%s imports %s: only workload.go knows the saga", f, p)
			}
		}
		ast.Inspect(file, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				return true
			}
			if slices.Contains(sagaWords, s) || sagaNames.MatchString(s) {
				t.Errorf("%s: %q names the order saga: only workload.go knows the saga", fset.Position(lit.Pos()), s)
			}
			return true
		})
	}
	if checked < 10 {
		t.Fatalf("checked %d files: not the package", checked)
	}
}

// TestOrderSagaWorkload checks the order saga's workload against its
// definition: every kind starts with the saga's start command and ends
// with one of its events, the default mix has a weight per kind, the
// first kind (the from-zero phase's) ends completed, and every probe of
// a CloudEvent names one of the saga's types.
func TestOrderSagaWorkload(t *testing.T) {
	w := OrderSaga
	if len(w.Mix) != len(w.Kinds) {
		t.Fatalf("%d weights for %d kinds", len(w.Mix), len(w.Kinds))
	}
	types := w.Def.Types()
	for _, k := range w.Kinds {
		if k.Start != w.Def.Steps[0].Command || !slices.Contains(types, k.End) || len(k.Data) == 0 || k.Name == "" || k.Label == "" {
			t.Errorf("kind %+v", k)
		}
		if _, err := ordersaga.DecodeOrderRequest(k.Data); err != nil {
			t.Errorf("kind %s: its start data is not an order request: %v", k.Name, err)
		}
	}
	if w.Kinds[0].End != w.Def.Steps[len(w.Def.Steps)-1].Succeeded {
		t.Errorf("the first kind ends with %s, not the last step's success", w.Kinds[0].End)
	}
	if got := w.terminalTypes(); !slices.Equal(got, []string{ordersaga.Confirmed, ordersaga.Cancelled}) {
		t.Errorf("terminal types %v", got)
	}
	for fn, p := range w.Probes {
		if (p.Get == "") == (p.Type == "") {
			t.Errorf("probe of %s: want a GET or a type: %+v", fn, p)
		}
		if p.Type != "" && !slices.Contains(types, p.Type) {
			t.Errorf("probe of %s: %s is not a type of the saga", fn, p.Type)
		}
	}
	for _, e := range w.Extras {
		for _, typ := range e.Types {
			if !w.isStep(typ) {
				t.Errorf("extra %s/%s: %s is not a type of the saga", e.Function, e.Step, typ)
			}
		}
	}
	if !w.isStep(ordersaga.PayAuthorized) || w.isStep("dev.knative.sources.ping") {
		t.Error("isStep: the saga's events are steps, a ping is not")
	}
	if !w.isFinal(ordersaga.Confirmed) || !w.isFinal(ordersaga.SendNotification) || w.isFinal(ordersaga.Created) {
		t.Error("isFinal")
	}
	if k := w.Related[0].Key(saga.State{Key: "o-1"}); k != ordersaga.OrderKey("o-1") {
		t.Errorf("the order record's key: %q", k)
	}
	if k := w.Related[0].Key(saga.State{}); k != "" {
		t.Errorf("a saga without a business key has no order record: %q", k)
	}
}
