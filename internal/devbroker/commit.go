package devbroker

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxCommitBatch bounds how many operations share one MULTI/EXEC.
const maxCommitBatch = 512

// commitOp is one atomic change to a broker's Redis keys. All operations
// that are waiting when the committer picks up work are written in a single
// MULTI/EXEC round trip (group commit), so under load many replies and
// acknowledgements share one round trip, and at low load an operation is
// sent at once.
type commitOp struct {
	reply      []any    // XADD these fields to the stream (a reply event)
	doneKey    string   // SADD doneMember to doneKey (multi-trigger progress)
	doneMember string   //
	ack        []string // XACK + XDEL these entries
	delKey     string   // DEL (the done set of a finished entry)
	done       chan error
}

// committer owns the writes of one broker stream while Run is active.
type committer struct {
	rdb      redis.UniversalClient
	log      *slog.Logger
	br       *brokerRun
	consumer string
}

// run executes operations until ops is closed. ctx must outlive the
// deliveries (Run passes a context that is never cancelled).
func (c *committer) run(ctx context.Context) {
	batch := make([]*commitOp, 0, maxCommitBatch)
	for op := range c.br.commits {
		batch = append(batch[:0], op)
	more:
		for len(batch) < maxCommitBatch {
			select {
			case op, ok := <-c.br.commits:
				if !ok {
					break more
				}
				batch = append(batch, op)
			default:
				break more
			}
		}
		c.exec(ctx, batch)
	}
}

// exec writes a batch in one MULTI/EXEC. If the batch stores replies,
// the transaction ends with an XREADGROUP of new entries, so the replies
// are claimed for delivery in the same round trip (BLOCK does not apply
// inside MULTI; the entries go to br.committed, which has room because the
// committer is its only sender).
func (c *committer) exec(ctx context.Context, batch []*commitOp) {
	key := c.br.key
	pipe := c.rdb.TxPipeline()
	ends := make([]int, len(batch))
	n, replies := 0, 0
	var acks []string
	for i, op := range batch {
		if op.reply != nil {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: op.reply})
			n++
			replies++
		}
		if op.doneKey != "" {
			pipe.SAdd(ctx, op.doneKey, op.doneMember)
			n++
		}
		acks = append(acks, op.ack...)
		if op.delKey != "" {
			pipe.Del(ctx, op.delKey)
			n++
		}
		ends[i] = n
	}
	// One XACK and one XDEL for the whole batch: in the same transaction,
	// so the entries are still acknowledged together with their replies.
	var ackCmd, delCmd *redis.IntCmd
	if len(acks) > 0 {
		ackCmd = pipe.XAck(ctx, key, groupName, acks...)
		delCmd = pipe.XDel(ctx, key, acks...)
	}
	var read *redis.XStreamSliceCmd
	if replies > 0 && c.br.reading.Load() && len(c.br.committed) < cap(c.br.committed) {
		read = pipe.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: groupName, Consumer: c.consumer, Streams: []string{key, ">"}, Count: readCount, Block: -1,
		})
	}
	cmds, err := pipe.Exec(ctx)
	start := 0
	for i, op := range batch {
		var opErr error
		if err != nil {
			if len(cmds) < ends[i] {
				opErr = err
			} else {
				for _, cmd := range cmds[start:ends[i]] {
					if e := cmd.Err(); e != nil {
						opErr = e
						break
					}
				}
			}
			if opErr == nil && len(op.ack) > 0 {
				opErr = cmp.Or(ackCmd.Err(), delCmd.Err())
			}
		}
		start = ends[i]
		// An acknowledged entry is no longer held. One whose
		// acknowledgement failed is released too unless the caller
		// retries it (op.done): the reclaimer then finds it pending.
		if len(op.ack) > 0 && (opErr == nil || op.done == nil) {
			c.br.held.remove(op.ack)
		}
		if op.done != nil {
			op.done <- opErr
		} else if opErr != nil {
			c.log.Warn("devbroker: acknowledge entries (they stay pending and are reclaimed)", slog.String("stream", key), slog.Any("error", opErr))
		}
	}
	if read != nil {
		// Entries read here are pending for this consumer; if they cannot be
		// handed on (error), the next Run redelivers them.
		if res, rerr := read.Result(); rerr == nil && len(res) > 0 && len(res[0].Messages) > 0 {
			c.br.held.add(res[0].Messages)
			c.br.committed <- res[0].Messages
		}
	}
}

// commit hands op to the broker's committer and waits for it, retrying
// with backoff while Redis fails. It gives up only when ctx ends (shutdown
// after the drain timeout); the entry then stays pending in Redis and is
// redelivered by the next Run. A reply is therefore never lost: either it
// is stored together with the acknowledgement, or the delivery is repeated.
func (b *Broker) commit(ctx context.Context, br *brokerRun, op *commitOp) error {
	backoff := 20 * time.Millisecond
	for {
		op.done = make(chan error, 1)
		select {
		case br.commits <- op:
		case <-ctx.Done():
			return ctx.Err()
		}
		var err error
		select {
		case err = <-op.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if err == nil {
			return nil
		}
		b.log.Warn("devbroker: redis write failed, retrying", slog.String("broker", br.name.String()), slog.Duration("backoff", backoff), slog.Any("error", err))
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("give up after redis error %w: %w", err, ctx.Err())
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// ackAsync queues an acknowledgement without waiting (filter misses). If it
// fails the entries stay pending and are re-evaluated by the next Run.
func (b *Broker) ackAsync(ctx context.Context, br *brokerRun, ids []string) {
	if len(ids) == 0 {
		return
	}
	select {
	case br.commits <- &commitOp{ack: ids}:
	case <-ctx.Done():
	}
}
