package dev

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
)

// seed runs the Redis commands of a file, one per line, as redis-cli reads
// them (blank lines and lines starting with # are skipped; words are
// separated by spaces, and "double quotes" keep spaces). It is how a
// project's demo data gets into the dev Redis: the same file a cluster's
// seed Job pipes into redis-cli. It returns how many commands ran.
func seed(ctx context.Context, rdb redis.UniversalClient, path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	n := 0
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		args, err := splitCommand(text)
		if err != nil {
			return n, fmt.Errorf("line %d: %w", line, err)
		}
		if err := rdb.Do(ctx, args...).Err(); err != nil && err != redis.Nil {
			return n, fmt.Errorf("line %d: %s: %w", line, args[0], err)
		}
		n++
	}
	return n, sc.Err()
}

// splitCommand splits a command line into words; "..." keeps spaces and
// understands \" and \\.
func splitCommand(s string) ([]any, error) {
	var out []any
	var b strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		case quoted && c == '"':
			quoted = false
		case !quoted && c == '"':
			quoted, inWord = true, true
		case !quoted && (c == ' ' || c == '\t'):
			if inWord {
				out = append(out, b.String())
				b.Reset()
				inWord = false
			}
		default:
			b.WriteByte(c)
			inWord = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote")
	}
	if inWord {
		out = append(out, b.String())
	}
	return out, nil
}
