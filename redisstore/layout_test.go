package redisstore

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The store is the only code that knows the Redis layout of saga records:
// everything else goes through saga.Store, so the layout can change (a
// field renamed, an index added, a Cluster-friendly key) in one package.
// These tests fail if Go source outside this package names a key of the
// layout or reads or writes a field of a saga's hash.

// recordFields are the fixed field names of a saga's hash (see
// transitionLua); recordFieldPattern matches the numbered and keyed ones:
// data chunks d<i>, history l<i>, e<i>, a<i>, y<i>, redeliveries c<v>,
// reasons x<v>, outputs o.<step>, stored replies r<digest>.
var (
	recordFields       = []string{"sg", "k", "tr", "st", "v", "sp", "ca", "ua", "dl", "du", "dc", "rs", "fs", "cp", "n", "nx"}
	recordFieldPattern = regexp.MustCompile(`^([dlexyac][0-9]+|o\..+|r[A-Za-z0-9_-]{12})$`)
)

func isRecordField(s string) bool {
	return slices.Contains(recordFields, s) || recordFieldPattern.MatchString(s)
}

// keyPrefixes are the prefixes of the layout's keys, from KeyPatterns.
func keyPrefixes() []string {
	var out []string
	for _, p := range KeyPatterns() {
		out = append(out, strings.TrimSuffix(p, "*"))
	}
	return out
}

// hashFieldArgs are go-redis's hash commands and where their field
// arguments are (after ctx and key): "one" the third argument, "all" every
// argument from the third, "pairs" every other one from the third.
var hashFieldArgs = map[string]string{
	"HGet": "one", "HExists": "one", "HIncrBy": "one", "HIncrByFloat": "one", "HSetNX": "one", "HStrLen": "one",
	"HMGet": "all", "HDel": "all", "HGetDel": "all", "HExpire": "all", "HTTL": "all", "HPersist": "all",
	"HSet": "pairs", "HMSet": "pairs",
}

// luaHashField finds a hash command's first field in a Lua script.
var luaHashField = regexp.MustCompile(`(?i)redis\.p?call\(\s*['"](hget|hmget|hset|hsetnx|hmset|hdel|hexists|hincrby|hincrbyfloat|hstrlen)['"]\s*,\s*[^,()]+,\s*['"]([^'"]*)['"]`)

// layoutLeaks lists where a file names the store's layout: a string
// literal holding one of its key prefixes, a go-redis hash command on a
// saga record's field, or a Lua script reading or writing one.
func layoutLeaks(fset *token.FileSet, f *ast.File) []string {
	var out []string
	at := func(n ast.Node, format string, args ...any) {
		out = append(out, fset.Position(n.Pos()).String()+": "+fmt.Sprintf(format, args...))
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BasicLit:
			if n.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(n.Value)
			if err != nil {
				return true
			}
			for _, p := range keyPrefixes() {
				if strings.Contains(s, p) {
					at(n, "key prefix %q of the store's layout", p)
				}
			}
			for _, m := range luaHashField.FindAllStringSubmatch(s, -1) {
				if isRecordField(m[2]) {
					at(n, "Lua %s of the saga record's field %q", strings.ToUpper(m[1]), m[2])
				}
			}
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			kind := hashFieldArgs[sel.Sel.Name]
			for i, arg := range n.Args {
				if i < 2 || kind == "" || (kind == "one" && i != 2) || (kind == "pairs" && i%2 != 0) {
					continue
				}
				lit, ok := arg.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				if s, err := strconv.Unquote(lit.Value); err == nil && isRecordField(s) {
					at(lit, "%s of the saga record's field %q", sel.Sel.Name, s)
				}
			}
		}
		return true
	})
	return out
}

// TestLayoutStaysInRedisstore scans every non-test Go file of the module
// outside this package for the store's layout.
func TestLayoutStaysInRedisstore(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	here, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	scanned := 0
	var leaks []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path == here || (path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		scanned++
		leaks = append(leaks, layoutLeaks(fset, f)...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if scanned < 50 {
		t.Fatalf("scanned %d files under %s: not the module", scanned, root)
	}
	for _, l := range leaks {
		t.Errorf("%s: only redisstore may know the saga store's Redis layout; add a Store method", l)
	}
}

// TestLayoutLeaksFound checks the scanner on code that leaks the layout
// and on code that merely looks like it.
func TestLayoutLeaksFound(t *testing.T) {
	const leaky = `package x
func f() {
	rdb.HGet(ctx, "ksaga:{"+id+"}", "st")
	rdb.HMGet(ctx, key, "v", "cp", "nx")
	rdb.HSet(ctx, key, "du", 0)
	rdb.ZRange(ctx, "ksaga:idx:"+def+":due", 0, -1)
	rdb.XRange(ctx, "ksaga:dl", "-", "+")
	_ = ` + "`" + `local s = redis.call('HGET', KEYS[1], 'st')` + "`" + `
	rdb.HGet(ctx, key, "l12")
}`
	const clean = `package x
func f() {
	rdb.HGet(ctx, OrderKey(id), "saga_id")
	rdb.HSet(ctx, UserKey(u), "username", "v", "email", "st")
	rdb.HGetAll(ctx, UserKey(u))
	fmt.Println("ksaga:", err)
	_ = "ksaga:broker:" + name
	_ = "ksaga:fault:" + svc
	_ = ` + "`" + `if redis.call('HGET', keys.order, 'status') ~= 'pending' then return end` + "`" + `
	log("st", "v")
}`
	for _, tt := range []struct {
		src  string
		want int
	}{{leaky, 10}, {clean, 0}} {
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, "x.go", tt.src, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := layoutLeaks(fset, f); len(got) != tt.want {
			t.Errorf("%d leaks, want %d:\n%s", len(got), tt.want, strings.Join(got, "\n"))
		}
	}
}

// TestLayoutNamesAreTheStores keeps the scanner's names honest: every
// field it looks for is one the store's scripts write, and every key
// prefix is one the store's keys have.
func TestLayoutNamesAreTheStores(t *testing.T) {
	for _, f := range recordFields {
		if !strings.Contains(transitionLua, "'"+f+"'") {
			t.Errorf("field %q is not in the change script", f)
		}
	}
	var keys []string
	for _, l := range []layout{{}, {cluster: true}} {
		sh := l.shardOf("id")
		keys = append(keys, l.sagaKey("id"), l.indexKey(sh, "order", "due"), l.businessKey(sh, "order", "o-1"), l.defsKey(sh), l.deadLetterKey(sh))
	}
	c := layout{cluster: true}
	keys = append(keys, replayedKey, c.pendingKey("id"), c.pendingsKey(0), barrierKey("payment:balance:1", "id", 1, "r", 0))
	for _, k := range keys {
		if !slices.ContainsFunc(keyPrefixes(), func(p string) bool { return strings.HasPrefix(k, p) }) {
			t.Errorf("key %q has none of the prefixes %v", k, keyPrefixes())
		}
	}
	if !isRecordField(dedupeField("/src", "id")) {
		t.Errorf("a stored reply's field %q is not recognised", dedupeField("/src", "id"))
	}
}
