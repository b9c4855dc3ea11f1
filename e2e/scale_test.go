package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ksaga/ksaga/sagatest"
)

// services is the part of GET /.ksaga/services these tests read.
type services struct {
	Scale    string `json:"scale"`
	Services []struct {
		Name     string `json:"name"`
		Desired  int    `json:"desired"`
		Ready    int    `json:"ready"`
		Replicas []struct {
			PID int `json:"pid"`
		} `json:"replicas"`
		Autoscaling *struct {
			MinScale int `json:"min_scale"`
		} `json:"autoscaling"`
	} `json:"services"`
}

func (s system) services(t *testing.T) services {
	t.Helper()
	resp, err := http.Get(s.dev.URL("/.ksaga/services"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var out services
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// devMetric reads one series of ksaga dev's /metrics (0 if absent).
func (s system) devMetric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get(s.dev.URL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestScaleFromZero: with Knative's autoscaling on a short window, every
// min-scale 0 service ends with no process after the window without
// traffic, while order-api (min-scale 1) keeps one; a saga started then is
// held at each service while its first process starts, and completes
// exactly once; the holds and activations are in ksaga dev's metrics.
func TestScaleFromZero(t *testing.T) {
	t.Parallel()
	s := start(t, "choreography", nil, "--scale-window", "2s")
	startPIDs := s.dev.Pids()
	sagatest.Eventually(t, 60*time.Second, func() error {
		for _, svc := range s.services(t).Services {
			want := svc.Autoscaling.MinScale
			if svc.Desired != want || svc.Ready != want || len(svc.Replicas) != want {
				return fmt.Errorf("%s: desired %d, ready %d, %d replicas; want %d", svc.Name, svc.Desired, svc.Ready, len(svc.Replicas), want)
			}
		}
		return nil
	})
	for _, svc := range s.services(t).Services {
		if svc.Name == "order-api" && (svc.Ready != 1 || svc.Replicas[0].PID != startPIDs["saga/order-api"]) {
			t.Errorf("order-api (min-scale 1) did not keep its process: %+v", svc)
		}
	}
	for svc, pid := range startPIDs {
		if svc != "saga/order-api" && alive(pid) {
			t.Errorf("%s at zero, but its process %d is alive", svc, pid)
		}
	}
	balance := s.balance(t, 1)

	a, code := s.order(t, 1, item("book", 1))
	if code != http.StatusAccepted {
		t.Fatalf("POST /orders: %d", code)
	}
	v := s.settled(t, a.OrderID, 60*time.Second)
	if v.Status != "confirmed" {
		t.Fatalf("order %s: %+v", a.OrderID, v.outcome())
	}
	// Exactly once: one saga, one charge, one notification.
	if n := s.sagaCount(t); n != 1 {
		t.Errorf("%d sagas, want 1", n)
	}
	if got := balance - s.balance(t, 1); got != 1250 {
		t.Errorf("alice paid %d, want 1250", got)
	}
	sagatest.Eventually(t, 20*time.Second, func() error {
		if n := s.notifications(t)[a.OrderID]; n != 1 {
			return fmt.Errorf("%d notifications for the order", n)
		}
		return nil
	})
	for _, svc := range []string{"order", "payment", "inventory", "notification", "users"} {
		for _, series := range []string{`ksaga_dev_activations_total{service="saga/` + svc + `"}`, `ksaga_dev_request_hold_seconds_count{service="saga/` + svc + `"}`} {
			if v := s.devMetric(t, series); v < 1 {
				t.Errorf("%s = %v, want at least 1", series, v)
			}
		}
		sagatest.Eventually(t, 5*time.Second, func() error { // logged after the held request is let through
			if !strings.Contains(s.dev.Log(), `msg="`+svc+` 0→1 (activation, ready in `) {
				return fmt.Errorf("no activation of %s in the log", svc)
			}
			return nil
		})
	}
	if v := s.devMetric(t, `ksaga_broker_delivery_retries_total{broker="saga/default",trigger="payment-on-order-created"}`); v != 0 {
		t.Errorf("%v retried deliveries to payment: a hold must not be a failed attempt", v)
	}
}

// alive reports whether pid is a process that has not exited (a zombie,
// exited but not reaped, is not alive).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return syscall.Kill(pid, 0) == nil // no /proc
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
