package bench

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/redis/go-redis/v9"

	"github.com/ksaga/ksaga/internal/redisserver"
)

// startCluster starts the Redis Cluster of --redis-masters and returns its
// REDIS_URL (the cluster form).
func (r *runner) startCluster(ctx context.Context) (string, error) {
	cfg := r.cfg
	r.logf("redis cluster: %d masters, no replicas (persistence: %s)", cfg.RedisMasters, cfg.AOF)
	pargs, err := persistenceArgs(cfg.AOF)
	if err != nil {
		return "", err
	}
	if r.cluster, err = redisserver.StartCluster(ctx, redisserver.ClusterOptions{
		Dir: filepath.Join(r.tmp, "cluster"), Masters: cfg.RedisMasters, Args: pargs}); err != nil {
		return "", err
	}
	for _, n := range r.cluster.Nodes {
		r.nodes = append(r.nodes, redis.NewClient(&redis.Options{Addr: n.Addr(), PoolSize: 2}))
	}
	r.data = r.cluster.Client()
	r.res.Settings.Redis = fmt.Sprintf("a Redis Cluster of %d masters on this machine (no replicas); %s", cfg.RedisMasters, redisSettingsText(cfg.AOF))
	r.res.Notes = append(r.res.Notes, fmt.Sprintf("Redis Cluster of %d masters: the saga phases, memory and attribution only; Redis figures (commands, reads, memory, CPU, MONITOR) are summed over the masters", cfg.RedisMasters))
	return r.cluster.URL(), nil
}

// takeRedisSnapshots is takeRedisSnapshot of every node, summed.
func takeRedisSnapshots(ctx context.Context, nodes []*redis.Client) (redisSnapshot, error) {
	var sum redisSnapshot
	for i, n := range nodes {
		s, err := takeRedisSnapshot(ctx, n)
		if err != nil {
			return redisSnapshot{}, err
		}
		if i == 0 {
			sum = s
			continue
		}
		for name, c := range s.cmds {
			t := sum.cmds[name]
			sum.cmds[name] = CmdStat{Calls: t.Calls + c.Calls, Usec: t.Usec + c.Usec}
		}
		for _, k := range []string{"total_reads_processed", "total_net_input_bytes", "total_net_output_bytes", "used_memory"} {
			sum.stats[k] = fmt.Sprint(infoInt(sum.stats, k) + infoInt(s.stats, k))
		}
	}
	return sum, nil
}

// usedMemory is the nodes' used_memory, summed.
func usedMemory(ctx context.Context, nodes []*redis.Client) int64 {
	var n int64
	for _, node := range nodes {
		if info, err := node.Info(ctx, "memory").Result(); err == nil {
			n += infoInt(parseInfo(info), "used_memory")
		}
	}
	return n
}

// mergeProcRedis adds the attribution of one node to that of others.
func mergeProcRedis(into, from map[string]*ProcRedis) {
	for name, p := range from {
		q := into[name]
		if q == nil {
			into[name] = p
			continue
		}
		for k, v := range p.TopLevel {
			q.TopLevel[k] += v
		}
		for k, v := range p.Lua {
			q.Lua[k] += v
		}
		q.RoundTrips += p.RoundTrips
		q.StepPath += p.StepPath
	}
}
