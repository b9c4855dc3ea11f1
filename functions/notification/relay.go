package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/ordersaga"
)

// Notification is one message to a customer.
type Notification struct {
	ID      string // outbox entry id
	SagaID  string
	OrderID string
	UserID  int32
	Kind    string // order_confirmed or order_cancelled
	Reason  string
}

// Sender delivers notifications (email, SMS, ...). It may be called more
// than once for one notification, so it should dedupe on Notification.ID.
type Sender interface {
	Send(ctx context.Context, n Notification) error
}

// logSender is the default Sender: one JSON log line per notification.
type logSender struct{ logger *slog.Logger }

func (s logSender) Send(ctx context.Context, n Notification) error {
	s.logger.InfoContext(ctx, "notification", "outbox_id", n.ID, "correlationid", n.SagaID, "order_id", n.OrderID,
		"user_id", n.UserID, "kind", n.Kind, "reason", n.Reason)
	return nil
}

const relayGroup = "sender"

// relay hands outbox entries to the sender, at least once: an entry is
// acknowledged only after Send succeeded; failed ones are claimed again.
type relay struct {
	rdb      redis.UniversalClient
	sender   Sender
	logger   *slog.Logger
	consumer string
}

func (r *relay) run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := r.once(ctx); err != nil && ctx.Err() == nil {
			r.logger.Warn("notification relay", "error", err.Error())
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (r *relay) once(ctx context.Context) error {
	err := r.rdb.XGroupCreateMkStream(ctx, ordersaga.OutboxKey, relayGroup, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create group: %w", err)
	}
	// entries some consumer read but never acknowledged, e.g. it crashed
	claimed, _, err := r.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: ordersaga.OutboxKey, Group: relayGroup,
		Consumer: r.consumer, MinIdle: 30 * time.Second, Start: "0", Count: 100}).Result()
	if err != nil {
		return fmt.Errorf("claim: %w", err)
	}
	r.deliver(ctx, claimed)
	streams, err := r.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: relayGroup, Consumer: r.consumer,
		Streams: []string{ordersaga.OutboxKey, ">"}, Count: 100, Block: time.Second}).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	for _, s := range streams {
		r.deliver(ctx, s.Messages)
	}
	return nil
}

func (r *relay) deliver(ctx context.Context, msgs []redis.XMessage) {
	for _, m := range msgs {
		n := Notification{ID: m.ID, SagaID: str(m.Values["saga_id"]), OrderID: str(m.Values["order_id"]),
			Kind: str(m.Values["kind"]), Reason: str(m.Values["reason"])}
		uid, _ := strconv.Atoi(str(m.Values["user_id"]))
		n.UserID = int32(uid)
		if err := r.sender.Send(ctx, n); err != nil {
			r.logger.Warn("send notification; will retry", "outbox_id", m.ID, "correlationid", n.SagaID, "error", err.Error())
			continue
		}
		if err := r.rdb.XAck(ctx, ordersaga.OutboxKey, relayGroup, m.ID).Err(); err != nil {
			r.logger.Warn("ack notification", "outbox_id", m.ID, "error", err.Error())
		}
	}
}

func str(v any) string {
	s, _ := v.(string)
	return s
}
