// Package ordersaga is the reference order saga of ksaga: order → payment →
// inventory → confirm, then a notification, with compensations (release
// stock, refund payment, cancel order). It holds what the saga's functions
// share: its Definition, its event catalogue, the saga's data and what
// steps record, the Redis key layout of each function's domain, and the
// demo fixture.
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
)

// SourceOrderAPI is the source of the Create commands POST /orders makes
// (the order-api function's).
const SourceOrderAPI = "/ksaga/order-api"
