package redisserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterOptions configure a Redis Cluster of redis-server processes.
type ClusterOptions struct {
	// Dir holds one folder per node (log, nodes.conf). Required.
	Dir string
	// Masters (default 3) and Replicas per master (default 0).
	Masters, Replicas int
	// NodeTimeout is cluster-node-timeout: how long a master may be
	// unreachable before its replica takes over (default 1s).
	NodeTimeout time.Duration
	// Args are added to every node's arguments.
	Args []string
}

// Cluster is a Redis Cluster of local redis-server processes, created with
// redis-cli --cluster create.
type Cluster struct {
	Nodes []*Server
}

// StartCluster starts Masters×(1+Replicas) cluster-enabled redis-servers
// on free loopback ports (each with a free cluster bus port), joins them
// with redis-cli --cluster create, and waits until every node reports the
// cluster ok and every replica is in sync.
func StartCluster(ctx context.Context, o ClusterOptions) (*Cluster, error) {
	if o.Masters <= 0 {
		o.Masters = 3
	}
	if o.NodeTimeout <= 0 {
		o.NodeTimeout = time.Second
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		return nil, errors.New("redis-cli not found on PATH: it comes with redis-server (Debian/Ubuntu: apt-get install -y redis-tools)")
	}
	c := &Cluster{}
	n := o.Masters * (1 + o.Replicas)
	for i := range n {
		dir := filepath.Join(o.Dir, "node"+strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			c.Kill()
			return nil, err
		}
		var srv *Server
		var err error
		for range 5 { // the bus port, free a moment ago, can be taken meanwhile
			var bus int
			if bus, err = FreePort(); err != nil {
				break
			}
			args := append([]string{"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
				"--cluster-node-timeout", strconv.FormatInt(o.NodeTimeout.Milliseconds(), 10), "--cluster-port", strconv.Itoa(bus),
				"--cluster-replica-validity-factor", "0"}, o.Args...)
			if srv, err = Start(ctx, Options{Dir: dir, Args: args}); err == nil {
				break
			}
		}
		if err != nil {
			c.Kill()
			return nil, fmt.Errorf("cluster node %d: %w", i, err)
		}
		c.Nodes = append(c.Nodes, srv)
	}
	args := []string{"--cluster", "create"}
	for _, s := range c.Nodes {
		args = append(args, s.Addr())
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(o.Replicas), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		c.Kill()
		return nil, fmt.Errorf("redis-cli --cluster create: %w\n%s", err, tail(string(out), 2000))
	}
	if err := c.WaitOK(ctx, 30*time.Second); err != nil {
		c.Kill()
		return nil, err
	}
	return c, nil
}

// Kill kills every node (SIGKILL).
func (c *Cluster) Kill() {
	for _, s := range c.Nodes {
		s.Kill()
	}
}

// Addrs are every node's host:port.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		out[i] = s.Addr()
	}
	return out
}

// URL is the cluster's REDIS_URL: redis://<node>?cluster=true&addr=<node>…
// (every node a seed).
func (c *Cluster) URL() string {
	addrs := c.Addrs()
	var b strings.Builder
	b.WriteString("redis://" + addrs[0] + "?cluster=true")
	for _, a := range addrs[1:] {
		b.WriteString("&addr=" + a)
	}
	return b.String()
}

// Client returns a cluster client of the nodes (close it).
func (c *Cluster) Client() *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), Protocol: 2})
}

// node is a client of one node (close it).
func node(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, MaxRetries: -1, DialTimeout: 500 * time.Millisecond})
}

// WaitOK waits until every running node reports cluster_state:ok with all
// 16384 slots served and knows every node, every replica's link to its
// master is up, and all agree on the master of every slot.
func (c *Cluster) WaitOK(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var why error
	for {
		if why = c.check(ctx); why == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("redis cluster not ok after %s: %w", timeout, why)
		}
		time.Sleep(50 * time.Millisecond) // poll interval, bounded by the deadline
	}
}

func (c *Cluster) check(ctx context.Context) error {
	var view string
	for i, s := range c.Nodes {
		if s.PID() == 0 {
			continue
		}
		cl := node(s.Addr())
		info, err := cl.ClusterInfo(ctx).Result()
		if err == nil {
			var repl string
			if repl, err = cl.Info(ctx, "replication").Result(); err == nil && strings.Contains(repl, "role:slave") &&
				!strings.Contains(repl, "master_link_status:up") {
				err = fmt.Errorf("node %d: replica not in sync", i)
			}
		}
		var slots []redis.ClusterSlot
		if err == nil {
			slots, err = cl.ClusterSlots(ctx).Result()
		}
		_ = cl.Close()
		if err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
		f := infoFields(info)
		if f["cluster_state"] != "ok" || f["cluster_slots_ok"] != "16384" || f["cluster_known_nodes"] != strconv.Itoa(len(c.Nodes)) {
			return fmt.Errorf("node %d: state %s, slots ok %s, known nodes %s", i, f["cluster_state"], f["cluster_slots_ok"], f["cluster_known_nodes"])
		}
		var v strings.Builder
		for _, sl := range slots {
			fmt.Fprintf(&v, "%d-%d:%s ", sl.Start, sl.End, sl.Nodes[0].Addr)
		}
		if view == "" {
			view = v.String()
		} else if view != v.String() {
			return fmt.Errorf("node %d sees other masters: %s / %s", i, v.String(), view)
		}
	}
	return nil
}

func infoFields(info string) map[string]string {
	out := map[string]string{}
	for line := range strings.SplitSeq(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			out[k] = v
		}
	}
	return out
}

// Node returns the index of the node at addr, or -1.
func (c *Cluster) Node(addr string) int {
	for i, s := range c.Nodes {
		if s.Addr() == addr {
			return i
		}
	}
	return -1
}

// MasterOf returns the index of the node serving slot, as a running node
// sees it.
func (c *Cluster) MasterOf(ctx context.Context, slot int) (int, error) {
	for _, s := range c.Nodes {
		if s.PID() == 0 {
			continue
		}
		cl := node(s.Addr())
		slots, err := cl.ClusterSlots(ctx).Result()
		_ = cl.Close()
		if err != nil {
			continue
		}
		for _, sl := range slots {
			if slot >= int(sl.Start) && slot <= int(sl.End) {
				return c.Node(sl.Nodes[0].Addr), nil
			}
		}
	}
	return -1, fmt.Errorf("no running node serves slot %d", slot)
}

// NodeID is the cluster node id of node i.
func (c *Cluster) NodeID(ctx context.Context, i int) (string, error) {
	cl := node(c.Nodes[i].Addr())
	defer func() { _ = cl.Close() }()
	return cl.Do(ctx, "CLUSTER", "MYID").Text()
}

// Reshard moves slots hash slots from node from to node to with
// redis-cli --cluster reshard (keys and all, while clients keep working).
func (c *Cluster) Reshard(ctx context.Context, from, to, slots int) error {
	fromID, err := c.NodeID(ctx, from)
	if err != nil {
		return err
	}
	toID, err := c.NodeID(ctx, to)
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "redis-cli", "--cluster", "reshard", c.Nodes[from].Addr(),
		"--cluster-from", fromID, "--cluster-to", toID, "--cluster-slots", strconv.Itoa(slots),
		"--cluster-yes", "--cluster-pipeline", "100").CombinedOutput()
	if err != nil {
		return fmt.Errorf("redis-cli --cluster reshard: %w\n%s", err, tail(string(out), 2000))
	}
	return nil
}

// MigrateSlots moves the given hash slots, keys and all, to node to while
// clients keep working, as redis-cli --cluster reshard does for ranges:
// the target imports, the source migrates, MIGRATE moves the keys in
// batches (clients meanwhile get ASK for the moved ones and TRYAGAIN for
// commands over both), then every master learns the slot's new owner.
func (c *Cluster) MigrateSlots(ctx context.Context, slots []int, to int) error {
	toID, err := c.NodeID(ctx, to)
	if err != nil {
		return err
	}
	target := node(c.Nodes[to].Addr())
	defer func() { _ = target.Close() }()
	host, port, _ := strings.Cut(c.Nodes[to].Addr(), ":")
	for _, slot := range slots {
		from, err := c.MasterOf(ctx, slot)
		if err != nil {
			return err
		}
		if from == to {
			continue
		}
		fromID, err := c.NodeID(ctx, from)
		if err != nil {
			return err
		}
		source := node(c.Nodes[from].Addr())
		err = func() error {
			defer func() { _ = source.Close() }()
			if err := target.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID).Err(); err != nil {
				return fmt.Errorf("slot %d importing: %w", slot, err)
			}
			if err := source.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID).Err(); err != nil {
				return fmt.Errorf("slot %d migrating: %w", slot, err)
			}
			for {
				keys, err := source.ClusterGetKeysInSlot(ctx, slot, 100).Result()
				if err != nil {
					return fmt.Errorf("slot %d keys: %w", slot, err)
				}
				if len(keys) == 0 {
					break
				}
				args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
				for _, k := range keys {
					args = append(args, k)
				}
				if err := source.Do(ctx, args...).Err(); err != nil {
					return fmt.Errorf("slot %d migrate: %w", slot, err)
				}
			}
			for _, id := range []*redis.Client{target, source} {
				if err := id.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err(); err != nil {
					return fmt.Errorf("slot %d node: %w", slot, err)
				}
			}
			return nil
		}()
		if err != nil {
			return err
		}
	}
	return nil
}
