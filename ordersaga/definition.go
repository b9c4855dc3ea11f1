package ordersaga

import (
	"time"

	"github.com/ksaga/ksaga/saga"
)

// Step names, as recorded in a saga's history and compensation stack. The
// order function serves two steps: it creates the order (the saga's start,
// undone by cancelling it) and confirms it (the pivot).
const (
	StepOrder        = "order"
	StepPayment      = "payment"
	StepInventory    = "inventory"
	StepNotification = "notification"
)

// Saga is the order saga: order → payment → inventory → confirm, then a
// notification whatever the outcome. Every step but the last is undone
// when a later one fails: inventory releases its reservation, payment
// refunds its charge, the order is cancelled.
var Saga = &saga.Definition{
	Name:    "order",
	Timeout: saga.Duration(5 * time.Minute),
	Steps: []saga.StepDef{
		{Name: StepOrder, Command: Create, Succeeded: Created, Failed: Rejected, Compensation: Cancel, Compensated: Cancelled},
		{Name: StepPayment, Command: AuthorizePay, Succeeded: PayAuthorized, Failed: PayFailed, Compensation: RefundPay, Compensated: PayRefunded},
		{Name: StepInventory, Command: ReserveStock, Succeeded: StockReserved, Failed: StockFailed, Compensation: ReleaseStock, Compensated: StockReleased},
		{Name: StepOrder, Command: Confirm, Succeeded: Confirmed, Failed: ConfirmFailed},
	},
	Finally:     &saga.StepDef{Name: StepNotification, Command: SendNotification, Succeeded: NotificationSent},
	Completed:   SagaCompleted,
	Compensated: SagaCompensated,
}
