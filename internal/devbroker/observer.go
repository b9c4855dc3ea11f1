package devbroker

// Labels identify what a counter is about. Trigger is empty for ingress
// counters (Received, Rejected).
type Labels struct {
	Namespace string
	Broker    string
	Trigger   string
	EventType string
}

// Observer receives the broker's counters. Methods are called synchronously
// from ingress and delivery goroutines and must be cheap and safe for
// concurrent use. Embed NopObserver to implement only some of them.
type Observer interface {
	// Received: an event was stored in a broker stream (from ingress, or a
	// reply published back to the broker).
	Received(l Labels)
	// Rejected: ingress refused an event with code (400, 404, 413, 503), or a
	// reply was refused (Trigger set).
	Rejected(l Labels, code int)
	// Delivered: the subscriber accepted the event with a 2xx code.
	Delivered(l Labels, code int)
	// Retried: one retry of a delivery is about to happen after code
	// (500 for transport errors, 502 for a 2xx with a body that is not an
	// event).
	Retried(l Labels, code int)
	// DeadLettered: the event reached the dead letter sink; code is the
	// failure that sent it there.
	DeadLettered(l Labels, code int)
	// Dropped: the delivery failed with code and there was no dead letter
	// sink, or the dead letter sink failed too.
	Dropped(l Labels, code int)
}

// NopObserver ignores everything.
type NopObserver struct{}

// Received implements Observer.
func (NopObserver) Received(Labels) {}

// Rejected implements Observer.
func (NopObserver) Rejected(Labels, int) {}

// Delivered implements Observer.
func (NopObserver) Delivered(Labels, int) {}

// Retried implements Observer.
func (NopObserver) Retried(Labels, int) {}

// DeadLettered implements Observer.
func (NopObserver) DeadLettered(Labels, int) {}

// Dropped implements Observer.
func (NopObserver) Dropped(Labels, int) {}
