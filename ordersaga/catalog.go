// Package ordersaga is the reference order saga of ksaga: order → payment →
// inventory → notification, with compensations (refund payment, cancel
// order). It holds what the saga's functions share: the event catalogue, the
// saga's data, the Redis key layout of each function's domain, the demo
// fixture and the saga Definition that drives the orchestrator.
package ordersaga

// Event types (docs/protocol.md). Commands are imperative and are sent by
// the orchestrator (or a client, for Create); events are past tense and are
// what the steps reply with. Choreography wires events to steps;
// orchestration wires events to the orchestrator and commands to steps.
const (
	// Commands.
	Create           = "io.ksaga.order.create" // starts the saga: data is an OrderRequest
	Confirm          = "io.ksaga.order.confirm"
	Cancel           = "io.ksaga.order.cancel"
	AuthorizePay     = "io.ksaga.payment.authorize"
	RefundPay        = "io.ksaga.payment.refund"
	ReserveStock     = "io.ksaga.inventory.reserve"
	ReleaseStock     = "io.ksaga.inventory.release"
	SendNotification = "io.ksaga.notification.send"

	// Events.
	Created          = "io.ksaga.order.created"
	Rejected         = "io.ksaga.order.rejected"
	Confirmed        = "io.ksaga.order.confirmed"
	ConfirmFailed    = "io.ksaga.order.confirmfailed" // only the dead-letter sink sends it
	Cancelled        = "io.ksaga.order.cancelled"
	PayAuthorized    = "io.ksaga.payment.authorized"
	PayFailed        = "io.ksaga.payment.failed"
	PayRefunded      = "io.ksaga.payment.refunded"
	StockReserved    = "io.ksaga.inventory.reserved"
	StockFailed      = "io.ksaga.inventory.failed"
	StockReleased    = "io.ksaga.inventory.released"
	NotificationSent = "io.ksaga.notification.sent"
	SagaCompleted    = "io.ksaga.saga.completed"
	SagaCompensated  = "io.ksaga.saga.compensated"

	// The order function's own inputs when it aborts a running saga or
	// redrives a failed compensation, never sent (docs/protocol.md): a
	// saga's deadline passed (the sweeper), its order was cancelled (POST
	// /orders/{id}/cancel), an operator redrives it (POST
	// /sagas/{id}/redrive).
	DeadlinePassed   = "io.ksaga.saga.deadlinepassed"
	CancelRequested  = "io.ksaga.saga.cancelrequested"
	RedriveRequested = "io.ksaga.saga.redriverequested"
)

// Sources of the events each function emits.
const (
	SourceOrder        = "/ksaga/order"
	SourceOrderAPI     = "/ksaga/order/api" // Create commands made by POST /orders
	SourcePayment      = "/ksaga/payment"
	SourceInventory    = "/ksaga/inventory"
	SourceNotification = "/ksaga/notification"
	SourceOrchestrator = "/ksaga/orchestrator"
	SourceDeadLetter   = "/ksaga/deadletter"
	SourceSweeper      = "/ksaga/order/sweeper" // the deadline sweeper of the order function
)

// Step names, as recorded in the saga's history and compensation stack.
const (
	StepOrder        = "order"
	StepPayment      = "payment"
	StepInventory    = "inventory"
	StepNotification = "notification"
)

// OutcomeCompensationFailed is the history outcome the dead-letter sink
// records for a compensation that ran out of retries. POST
// /sagas/{id}/redrive resumes the newest one.
const OutcomeCompensationFailed = "compensation_failed"
