package devbroker

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// appender batches the ingress XADDs of one broker stream (group commit)
// without a goroutine of its own: the first request that finds no flush
// in progress becomes the flusher; requests arriving meanwhile queue up
// and are written together in one pipelined round trip by it. Under load
// this amortises the Redis round trip; alone, a request is written at
// once.
type appender struct {
	rdb redis.UniversalClient
	key string

	mu       sync.Mutex
	queue    []*appendReq
	flushing bool
}

type appendReq struct {
	vals []any
	err  error
	done chan struct{}
}

// maxAppendBatch bounds one pipeline.
const maxAppendBatch = 256

// add stores vals in the stream and returns once Redis answered.
func (a *appender) add(ctx context.Context, vals []any) error {
	req := &appendReq{vals: vals, done: make(chan struct{})}
	a.mu.Lock()
	a.queue = append(a.queue, req)
	if a.flushing {
		a.mu.Unlock()
		<-req.done
		return req.err
	}
	a.flushing = true
	for len(a.queue) > 0 {
		n := min(len(a.queue), maxAppendBatch)
		batch := a.queue[:n:n]
		a.queue = a.queue[n:]
		a.mu.Unlock()
		a.flush(ctx, batch)
		a.mu.Lock()
	}
	a.queue = nil
	a.flushing = false
	a.mu.Unlock()
	<-req.done
	return req.err
}

func (a *appender) flush(ctx context.Context, batch []*appendReq) {
	if len(batch) == 1 {
		r := batch[0]
		r.err = a.rdb.XAdd(ctx, &redis.XAddArgs{Stream: a.key, Values: r.vals}).Err()
		close(r.done)
		return
	}
	pipe := a.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(batch))
	for i, r := range batch {
		cmds[i] = pipe.XAdd(ctx, &redis.XAddArgs{Stream: a.key, Values: r.vals})
	}
	_, _ = pipe.Exec(ctx) // a failure is set on every command
	for i, r := range batch {
		r.err = cmds[i].Err()
		close(r.done)
	}
}
