package redisstore

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// layout names the store's keys. On one primary it is the historical
// layout of the package doc; on a Redis Cluster every saga lives in one of
// shardCount shards, and a shard's keys (its sagas' records, their indexes,
// its dead letters) share one hash tag, so every script of a saga's change
// runs on one node and its indexes never drift from its record.
type layout struct{ cluster bool }

// shardCount is how many shards a Redis Cluster's sagas are spread over.
// Their hash tags are chosen so that shard n's slot is in
// [n*256, n*256+255]: a cluster whose masters hold contiguous slot
// ranges of about equal size (redis-cli --cluster create's) gets the same
// number of shards on every master, give or take one.
const shardCount = 64

// shardTags are the shards' hash tags (the text between the braces).
var shardTags = func() [shardCount]string {
	var tags [shardCount]string
	for n := range shardCount {
		for k := 0; ; k++ {
			t := strconv.Itoa(n) + "." + strconv.Itoa(k)
			if slot(t)/(slotCount/shardCount) == n {
				tags[n] = t
				break
			}
		}
	}
	return tags
}()

// shards is how many shards the layout has.
func (l layout) shards() int {
	if l.cluster {
		return shardCount
	}
	return 1
}

// shardOf is the shard of a saga (or of any id): an FNV-1a hash of it.
func (l layout) shardOf(id string) int {
	if !l.cluster {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % shardCount)
}

func (l layout) prefix(sh int) string { return "ksaga:{" + shardTags[sh] + "}:" }

// sagaKey is a saga's record (hash).
func (l layout) sagaKey(id string) string {
	if !l.cluster {
		return "ksaga:{" + id + "}"
	}
	return l.prefix(l.shardOf(id)) + "s:" + id
}

// pendingKey holds a saga's change whose effect runs on another node
// (cluster only; see cluster.go).
func (l layout) pendingKey(id string) string { return l.prefix(l.shardOf(id)) + "p:" + id }

// pendingsKey indexes a shard's pending changes by when they were
// prepared (cluster only).
func (l layout) pendingsKey(sh int) string { return l.prefix(sh) + "pending" }

// indexKey is index name of the sagas of definition def in shard sh.
func (l layout) indexKey(sh int, def, name string) string {
	if !l.cluster {
		return "ksaga:idx:" + def + ":" + name
	}
	return l.prefix(sh) + "idx:" + def + ":" + name
}

func (l layout) statusKey(sh int, def string, st string) string {
	return l.indexKey(sh, def, "s:"+st)
}

func (l layout) businessKey(sh int, def, key string) string { return l.indexKey(sh, def, "k:"+key) }

// defsKey is the set of the definitions seen (per shard).
func (l layout) defsKey(sh int) string {
	if !l.cluster {
		return "ksaga:idx:defs"
	}
	return l.prefix(sh) + "defs"
}

// deadLetterKey is the dead letters' stream (per shard).
func (l layout) deadLetterKey(sh int) string {
	if !l.cluster {
		return "ksaga:dl"
	}
	return l.prefix(sh) + "dl"
}

// replayedKey records who replayed which dead letter: one hash, read and
// written by single-key commands only.
const replayedKey = "ksaga:dl:replayed"

// barrierKey is the barrier of one attempt at a change whose effect runs
// on another node: in the effect's slot (tag), named by the saga, the
// version, the event's dedupe field and the attempt.
func barrierKey(tag, sagaID string, version int64, dedupe string, attempt int64) string {
	return "ksaga:b:{" + tag + "}:" + sagaID + ":" + strconv.FormatInt(version, 10) + ":" + dedupe + ":" + strconv.FormatInt(attempt, 10)
}

// slotCount is the number of hash slots of a Redis Cluster.
const slotCount = 16384

// hashTag is the part of key Redis Cluster hashes: the text between the
// first '{' and the first '}' after it, if not empty; else the whole key.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// slot is the Redis Cluster hash slot of key (CRC16/XMODEM of its hash
// tag, modulo 16384).
func slot(key string) int {
	return int(crc16(hashTag(key)) % slotCount)
}

// effectTag returns the hash tag shared by an effect's keys, for its
// barrier: an error names the keys when they are not all in one slot (an
// effect is one script: on Redis Cluster its keys must share a slot), or
// when the slot cannot be named by a tag.
func effectTag(name string, keys []string) (string, error) {
	if len(keys) == 0 {
		return "", fmt.Errorf("redisstore: effect %q has no keys: an effect touches only the keys it is given", name)
	}
	tag, first := hashTag(keys[0]), slot(keys[0])
	for _, k := range keys[1:] {
		if slot(k) != first {
			return "", fmt.Errorf("redisstore: effect %q: keys %q (slot %d) and %q (slot %d) are in different hash slots: "+
				"on Redis Cluster an effect's keys must share one slot; give them one hash tag, e.g. \"inventory:{stock}:<sku>\"",
				name, keys[0], first, k, slot(k))
		}
	}
	if strings.ContainsAny(tag, "{}") {
		return "", fmt.Errorf("redisstore: effect %q: key %q has braces but no hash tag: give it one (\"{...}\")", name, keys[0])
	}
	return tag, nil
}

// crc16 is CRC-16/XMODEM, Redis Cluster's key hash.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
