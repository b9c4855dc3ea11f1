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
	// claimEvery is how often the relay takes over entries another
	// consumer read but never acknowledged (it crashed); claimAfter is how
	// idle they must be. Zero: 10s and 30s.
	claimEvery, claimAfter time.Duration

	// keep is how many entries the outbox may hold before sent ones are
	// trimmed (zero: outboxKeep).
	keep int64

	claimed time.Time // when abandoned entries were last claimed
	ready   bool      // the consumer group exists
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
	if !r.ready {
		err := r.rdb.XGroupCreateMkStream(ctx, ordersaga.OutboxKey, relayGroup, "0").Err()
		if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return fmt.Errorf("create group: %w", err)
		}
		r.ready = true
	}
	every, after := r.claimEvery, r.claimAfter
	if every == 0 {
		every, after = 10*time.Second, 30*time.Second
	}
	if time.Since(r.claimed) > every {
		if err := r.claim(ctx, after); err != nil {
			return r.failed(err)
		}
		if err := r.trim(ctx); err != nil {
			return r.failed(err)
		}
		r.claimed = time.Now()
	}
	streams, err := r.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: relayGroup, Consumer: r.consumer,
		Streams: []string{ordersaga.OutboxKey, ">"}, Count: relayBatch, Block: time.Second}).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return r.failed(fmt.Errorf("read: %w", err))
	}
	var msgs []redis.XMessage
	for _, s := range streams {
		msgs = append(msgs, s.Messages...)
	}
	// While entries keep coming, a batch's XACK and the next read share
	// one round trip (the read does not block; when it finds nothing, the
	// next round blocks). When a claim is due, the round ends after the
	// batch, so entries to retry are not starved by a steady stream.
	for len(msgs) > 0 {
		sent := r.deliver(ctx, msgs)
		if ctx.Err() != nil || time.Since(r.claimed) > every {
			r.ack(context.WithoutCancel(ctx), sent)
			return nil
		}
		if msgs, err = r.ackAndRead(ctx, sent); err != nil {
			return r.failed(err)
		}
	}
	return nil
}

// claim takes over every entry pending for at least after, whichever
// consumer read it (a crashed relay, or this one when Send failed), page by
// page along XAUTOCLAIM's cursor, sends them and acknowledges the sent ones.
func (r *relay) claim(ctx context.Context, after time.Duration) error {
	for start := "0-0"; ctx.Err() == nil; {
		claimed, next, err := r.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: ordersaga.OutboxKey, Group: relayGroup,
			Consumer: r.consumer, MinIdle: after, Start: start, Count: relayBatch}).Result()
		if err != nil {
			return fmt.Errorf("claim: %w", err)
		}
		r.ack(context.WithoutCancel(ctx), r.deliver(ctx, claimed))
		if next == "0-0" || next == "" {
			return nil
		}
		start = next
	}
	return nil
}

// relayBatch is the most entries one read takes.
const relayBatch = 100

// outboxKeep is how many entries the outbox may hold before the relay trims
// the sent ones.
const outboxKeep = 100_000

// trim drops sent entries once the outbox holds more than keep: everything
// older than the oldest entry not yet acknowledged (pending for a relay)
// or not yet read. An entry is never trimmed before it was sent, however
// long the sender is down; the outbox grows instead.
func (r *relay) trim(ctx context.Context) error {
	keep := r.keep
	if keep == 0 {
		keep = outboxKeep
	}
	n, err := r.rdb.XLen(ctx, ordersaga.OutboxKey).Result()
	if err != nil {
		return fmt.Errorf("trim: %w", err)
	}
	if n <= keep {
		return nil
	}
	groups, err := r.rdb.XInfoGroups(ctx, ordersaga.OutboxKey).Result()
	if err != nil {
		return fmt.Errorf("trim: %w", err)
	}
	minID := ""
	for _, g := range groups {
		if g.Name == relayGroup {
			minID = g.LastDeliveredID // read (and so sent, or pending)
		}
	}
	if minID == "" || minID == "0-0" {
		return nil
	}
	p, err := r.rdb.XPending(ctx, ordersaga.OutboxKey, relayGroup).Result()
	if err != nil {
		return fmt.Errorf("trim: %w", err)
	}
	if p.Count > 0 && streamIDLess(p.Lower, minID) {
		minID = p.Lower
	}
	// MINID keeps minID itself; "~" trims whole stream nodes only, never
	// past minID.
	if err := r.rdb.XTrimMinIDApprox(ctx, ordersaga.OutboxKey, minID, 0).Err(); err != nil {
		return fmt.Errorf("trim: %w", err)
	}
	return nil
}

// streamIDLess compares two stream ids ("ms-seq").
func streamIDLess(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	ami, _ := strconv.ParseUint(am, 10, 64)
	bmi, _ := strconv.ParseUint(bm, 10, 64)
	if ami != bmi {
		return ami < bmi
	}
	asi, _ := strconv.ParseUint(as, 10, 64)
	bsi, _ := strconv.ParseUint(bs, 10, 64)
	return asi < bsi
}

// failed makes the next round check the group again (Redis may have
// restarted empty).
func (r *relay) failed(err error) error {
	if strings.Contains(err.Error(), "NOGROUP") {
		r.ready = false
	}
	return err
}

// deliver sends each entry and returns the ids that were sent.
func (r *relay) deliver(ctx context.Context, msgs []redis.XMessage) []string {
	sent := make([]string, 0, len(msgs))
	for _, m := range msgs {
		n := Notification{ID: m.ID, SagaID: str(m.Values["saga_id"]), OrderID: str(m.Values["order_id"]),
			Kind: str(m.Values["kind"]), Reason: str(m.Values["reason"])}
		uid, _ := strconv.Atoi(str(m.Values["user_id"]))
		n.UserID = int32(uid)
		if err := r.sender.Send(ctx, n); err != nil {
			r.logger.Warn("send notification; will retry", "outbox_id", m.ID, "correlationid", n.SagaID, "error", err.Error())
			continue
		}
		sent = append(sent, m.ID)
	}
	return sent
}

// ack acknowledges sent entries; an entry whose ack is lost is claimed and
// sent again later (at least once).
func (r *relay) ack(ctx context.Context, sent []string) {
	if len(sent) == 0 {
		return
	}
	if err := r.rdb.XAck(ctx, ordersaga.OutboxKey, relayGroup, sent...).Err(); err != nil {
		r.logger.Warn("ack notifications; they will be sent again", "count", len(sent), "error", err.Error())
	}
}

// ackAndRead acknowledges sent entries and reads new ones without
// blocking, in one round trip.
func (r *relay) ackAndRead(ctx context.Context, sent []string) ([]redis.XMessage, error) {
	pipe := r.rdb.Pipeline()
	var ack *redis.IntCmd
	if len(sent) > 0 {
		ack = pipe.XAck(ctx, ordersaga.OutboxKey, relayGroup, sent...)
	}
	read := pipe.XReadGroup(ctx, &redis.XReadGroupArgs{Group: relayGroup, Consumer: r.consumer,
		Streams: []string{ordersaga.OutboxKey, ">"}, Count: relayBatch, Block: -1})
	_, _ = pipe.Exec(ctx) // errors are per command
	if ack != nil && ack.Err() != nil {
		r.logger.Warn("ack notifications; they will be sent again", "count", len(sent), "error", ack.Err().Error())
	}
	streams, err := read.Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	var msgs []redis.XMessage
	for _, s := range streams {
		msgs = append(msgs, s.Messages...)
	}
	return msgs, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}
