package redisstore_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/saga"
	"github.com/ksaga/ksaga/sagatest"
)

// TestListPagesAcrossDefinitionsWithTies: sagas of several definitions
// created in the same millisecond are each listed once, whatever page
// boundary falls among them (a cursor's tie count is spent across the
// definitions in turn, not on each).
func TestListPagesAcrossDefinitionsWithTies(t *testing.T) {
	at := time.Now()
	s, err := redisstore.New(sagatest.Redis(t), redisstore.Options{Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var all []string
	for _, def := range []string{"alpha", "beta", "gamma"} {
		for i := range 3 {
			id := fmt.Sprintf("%s-%d", def, i)
			all = append(all, id)
			if _, err := s.Apply(ctx, saga.Change{SagaID: id, Saga: def, Event: saga.EventRef{Source: "/t", ID: id, Type: "t.start"},
				Create: &saga.Create{Saga: def, Data: []byte(`{}`), Deadline: at.Add(time.Hour)}, Step: "a",
				Success: saga.Move{Outcome: "started", Status: saga.StatusRunning, Due: at.Add(time.Minute)}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	slices.Sort(all)
	for _, q := range []saga.Query{{}, {Status: []saga.Status{saga.StatusRunning}}, {Overdue: true, Now: at.Add(time.Hour)}} {
		for limit := 1; limit <= len(all); limit++ {
			q.Limit, q.Cursor = limit, ""
			var got []string
			for range 20 {
				p, err := s.List(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				for _, st := range p.Sagas {
					got = append(got, st.ID)
				}
				if p.Next == "" {
					break
				}
				q.Cursor = p.Next
			}
			slices.Sort(got)
			if !slices.Equal(got, all) {
				t.Errorf("%+v limit %d: %v", q, limit, got)
			}
		}
	}
}
