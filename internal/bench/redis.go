package bench

import (
	"bufio"
	"context"
	"fmt"
	"github.com/ksaga/ksaga/internal/redisserver"
	"sort"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// CmdStat is one line of INFO commandstats (or a delta of two).
type CmdStat struct {
	Calls int64 `json:"calls"`
	Usec  int64 `json:"usec"`
}

// parseCommandStats parses INFO commandstats: lines such as
//
//	cmdstat_evalsha:calls=12,usec=40,usec_per_call=3.33,rejected_calls=0,failed_calls=0
//
// keyed by command name (subcommands as "client|list").
func parseCommandStats(info string) (map[string]CmdStat, error) {
	out := make(map[string]CmdStat)
	for line := range strings.SplitSeq(info, "\n") {
		line = strings.TrimSpace(line)
		rest, ok := strings.CutPrefix(line, "cmdstat_")
		if !ok {
			continue
		}
		name, fields, ok := strings.Cut(rest, ":")
		if !ok {
			return nil, fmt.Errorf("commandstats: line %q", line)
		}
		var st CmdStat
		for kv := range strings.SplitSeq(fields, ",") {
			k, v, _ := strings.Cut(kv, "=")
			var err error
			switch k {
			case "calls":
				st.Calls, err = strconv.ParseInt(v, 10, 64)
			case "usec":
				st.Usec, err = strconv.ParseInt(v, 10, 64)
			}
			if err != nil {
				return nil, fmt.Errorf("commandstats: %s %s=%q: %w", name, k, v, err)
			}
		}
		out[strings.ToLower(name)] = st
	}
	return out, nil
}

// diffCommandStats is after − before, per command, keeping commands whose
// call count changed. (CONFIG RESETSTAT between the two makes a command
// go backwards; it is then reported as after.)
func diffCommandStats(before, after map[string]CmdStat) map[string]CmdStat {
	out := make(map[string]CmdStat)
	for name, a := range after {
		b := before[name]
		d := CmdStat{Calls: a.Calls - b.Calls, Usec: a.Usec - b.Usec}
		if d.Calls < 0 {
			d = a
		}
		if d.Calls != 0 {
			out[name] = d
		}
	}
	return out
}

// parseInfo parses "key:value" lines of any INFO section.
func parseInfo(info string) map[string]string {
	out := make(map[string]string)
	for line := range strings.SplitSeq(info, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = v
		}
	}
	return out
}

func infoInt(m map[string]string, key string) int64 {
	v, _ := strconv.ParseInt(m[key], 10, 64)
	return v
}

// redisSnapshot is what the bench reads from Redis at the edges of a window.
type redisSnapshot struct {
	cmds  map[string]CmdStat
	stats map[string]string // INFO stats + memory
}

func takeRedisSnapshot(ctx context.Context, rdb *redis.Client) (redisSnapshot, error) {
	cs, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return redisSnapshot{}, fmt.Errorf("INFO commandstats: %w", err)
	}
	cmds, err := parseCommandStats(cs)
	if err != nil {
		return redisSnapshot{}, err
	}
	st, err := rdb.Info(ctx, "stats", "memory").Result()
	if err != nil {
		return redisSnapshot{}, fmt.Errorf("INFO stats: %w", err)
	}
	return redisSnapshot{cmds: cmds, stats: parseInfo(st)}, nil
}

// persistenceArgs are the redis-server arguments for an AOF setting: "off"
// is how the floors and targets were set (no RDB snapshots, no AOF).
func persistenceArgs(aof string) ([]string, error) {
	switch aof {
	case "off", "":
		return []string{"--save", "", "--appendonly", "no"}, nil
	case "everysec", "always":
		return []string{"--save", "", "--appendonly", "yes", "--appendfsync", aof}, nil
	}
	return nil, fmt.Errorf("--aof %q: want off, everysec or always", aof)
}

// startRedis starts redis-server on a free loopback port in dir, with the
// --aof setting's persistence.
func startRedis(ctx context.Context, dir, aof string) (*redisserver.Server, error) {
	pargs, err := persistenceArgs(aof)
	if err != nil {
		return nil, err
	}
	return redisserver.Start(ctx, redisserver.Options{Dir: dir, Args: pargs})
}

// redisVersion is INFO server's redis_version.
func redisVersion(ctx context.Context, rdb *redis.Client) string {
	s, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return ""
	}
	return parseInfo(s)["redis_version"]
}

// sortedKeys returns m's keys, sorted.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// lineScanner returns a scanner with a large line buffer.
func lineScanner(s string) *bufio.Scanner {
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	return sc
}
