package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/ksaga/ksaga/saga"
)

// TestListSagas: GET /sagas lists unfinished sagas, earliest deadline
// first; ?overdue=true only those past it; limit cuts the list and says so.
func TestListSagas(t *testing.T) {
	e := setup(t, map[string]string{"KSAGA_SWEEP_INTERVAL": "0"}) // nothing aborts "late" meanwhile
	now := time.Now()
	for id, deadline := range map[string]time.Time{"late": now.Add(-time.Minute), "soon": now.Add(time.Minute), "later": now.Add(time.Hour), "done": now.Add(time.Minute)} {
		e.apply(t, saga.Transition{SagaID: id, Create: true, Data: []byte(`{}`), Deadline: deadline, Step: "order",
			OnSuccess: saga.Outcome{Outcome: "created", Compensable: true}})
	}
	e.apply(t, saga.Transition{SagaID: "done", Step: "order", OnSuccess: saga.Outcome{Outcome: "confirmed", Status: saga.StatusCompleted}})

	list := func(query string, wantStatus int) sagaList {
		t.Helper()
		r := e.request(t, http.MethodGet, "/sagas"+query, "", nil)
		if r.Status != wantStatus {
			t.Fatalf("GET /sagas%s: %d %s", query, r.Status, r.Body)
		}
		var l sagaList
		if wantStatus == http.StatusOK {
			r.decode(t, &l)
		}
		return l
	}
	ids := func(l sagaList) (out []string) {
		for _, s := range l.Sagas {
			out = append(out, s.ID)
		}
		return out
	}
	if l := list("", http.StatusOK); len(l.Sagas) != 3 || l.More || l.Sagas[0].ID != "late" || !l.Sagas[0].Overdue ||
		l.Sagas[1].ID != "soon" || l.Sagas[1].Overdue || l.Sagas[2].ID != "later" || l.Sagas[0].Status != saga.StatusRunning {
		t.Fatalf("in flight: %+v", l)
	}
	if l := list("?overdue=true", http.StatusOK); len(l.Sagas) != 1 || l.Sagas[0].ID != "late" || l.More {
		t.Fatalf("overdue: %v more %v", ids(l), l.More)
	}
	if l := list("?limit=2", http.StatusOK); len(l.Sagas) != 2 || !l.More {
		t.Fatalf("limit 2: %v more %v", ids(l), l.More)
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x", "?overdue=maybe"} {
		list(q, http.StatusBadRequest)
	}
}
