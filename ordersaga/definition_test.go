package ordersaga

import "testing"

func TestOrderSagaIsValid(t *testing.T) {
	if err := OrderSaga.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestNext: the step a running saga waits on follows its newest completed
// step; the order's two steps share a name, and only the first is
// compensable.
func TestNext(t *testing.T) {
	for _, tt := range []struct {
		stack []string
		want  string // the awaited step's failure event; "" when there is none
	}{
		{nil, Rejected},
		{[]string{StepOrder}, PayFailed},
		{[]string{StepPayment, StepOrder}, StockFailed},
		{[]string{StepInventory, StepPayment, StepOrder}, ConfirmFailed},
		{[]string{"unknown"}, ""},
	} {
		next, ok := OrderSaga.Next(tt.stack)
		if ok != (tt.want != "") || next.Failed != tt.want {
			t.Errorf("Next(%v) = %s (failure %q), %v; want failure %q", tt.stack, next.Name, next.Failed, ok, tt.want)
		}
	}
}
