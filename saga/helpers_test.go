package saga

import "github.com/cloudevents/sdk-go/v2/event"

func newEvent() event.Event {
	e := event.New()
	e.SetID("1")
	e.SetSource("/s")
	e.SetType("t")
	return e
}
