package dev

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// defaultBinDir is os.UserCacheDir()/ksaga/bin/<base of dir>-<hash of its
// absolute path>: one folder per project checkout, so that two checkouts do
// not overwrite each other's binaries.
func defaultBinDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("bin dir: %w", err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join(cache, "ksaga", "bin", filepath.Base(abs)+"-"+hex.EncodeToString(sum[:4])), nil
}

// build compiles the main packages pkgs with `go build`, run in dir (so the
// module and build cache of the project are used), and returns the binary
// of each package.
//
// The binaries go to binDir, where `go build` leaves an up-to-date binary
// untouched, so a restart of `ksaga dev` without code changes links nothing.
// Packages are first checked with `go list` (a package that does not exist
// or is not a main package is an error naming it), then built in one `go
// build -o binDir/` per group of distinct base names. An exclusive lock on
// binDir/.lock serialises concurrent `ksaga dev` processes of the same
// checkout.
//
// Progress goes to log: `go build -v` names every package it compiles, and
// the first build of a checkout compiles every dependency (a minute or
// more), so each function built is logged, and the dependencies every 25
// packages.
func build(ctx context.Context, log *slog.Logger, dir, binDir string, pkgs []string) (map[string]string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("build: the go command is needed to build ko:// images: %w", err)
	}
	pkgs = slices.Clone(pkgs)
	slices.Sort(pkgs)
	pkgs = slices.Compact(pkgs)
	if len(pkgs) == 0 {
		return map[string]string{}, nil
	}
	prog := &buildProgress{log: log, total: len(pkgs), mains: map[string]bool{}}
	for _, p := range pkgs {
		prog.mains[p] = true
	}
	if err := checkMainPackages(ctx, goTool, dir, pkgs, prog); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	unlock, err := lockFile(filepath.Join(binDir, ".lock"))
	if err != nil {
		return nil, fmt.Errorf("build: lock %s: %w", binDir, err)
	}
	defer unlock()

	log.Info("building functions", "count", len(pkgs), "with", "go build (the first build compiles their dependencies, which takes a while; progress below)")
	out := make(map[string]string, len(pkgs))
	for i, group := range groupByBase(pkgs) {
		gdir := binDir
		if i > 0 {
			gdir = filepath.Join(binDir, fmt.Sprintf("%d", i))
			if err := os.MkdirAll(gdir, 0o755); err != nil {
				return nil, fmt.Errorf("build: %w", err)
			}
		}
		args := append([]string{"build", "-v", "-o", gdir + string(filepath.Separator)}, group...)
		cmd := exec.CommandContext(ctx, goTool, args...)
		cmd.Dir = dir
		var outb bytes.Buffer
		lw := newLineWriter(prog, "")
		cmd.Stdout, cmd.Stderr = &outb, io.MultiWriter(&outb, lw)
		err := cmd.Run()
		lw.Flush()
		if err != nil {
			return nil, fmt.Errorf("build: go %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(prog.errors(outb.String())))
		}
		for _, p := range group {
			bin := filepath.Join(gdir, binaryName(p)+exeSuffix())
			if _, err := os.Stat(bin); err != nil {
				return nil, fmt.Errorf("build: %s: %w", p, err)
			}
			out[p] = bin
		}
	}
	return out, nil
}

// buildProgress logs the lines of `go build -v`: a function's main package
// (compiled, then linked), every 25th dependency, and `go: downloading`.
type buildProgress struct {
	log   *slog.Logger
	total int
	mains map[string]bool
	deps  int
	built int
}

// Write receives one line at a time (lineWriter).
func (b *buildProgress) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	switch {
	case b.mains[line]:
		b.built++
		b.log.Info("building function", "function", binaryName(line), "progress", fmt.Sprintf("%d/%d", b.built, b.total), "dependencies_compiled", b.deps)
	case strings.HasPrefix(line, "go: "):
		b.log.Info(line)
	case isImportPath(line):
		b.deps++
		if b.deps%25 == 0 {
			b.log.Info("compiling dependencies", "packages", b.deps, "latest", line)
		}
	}
	return len(p), nil
}

// errors drops the package names of -v from a failed build's output.
func (b *buildProgress) errors(out string) string {
	var keep []string
	for line := range strings.SplitSeq(out, "\n") {
		if t := strings.TrimSpace(line); t == "" || b.mains[t] || isImportPath(t) {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

// isImportPath reports a line that is only an import path (what -v prints).
func isImportPath(s string) bool {
	return s != "" && !strings.ContainsAny(s, " \t:#") && !strings.HasPrefix(s, ".")
}

// checkMainPackages fails, naming every package concerned, unless each of
// pkgs is a main package of the build list. Modules it downloads are
// logged through prog.
func checkMainPackages(ctx context.Context, goTool, dir string, pkgs []string, prog *buildProgress) error {
	args := append([]string{"list", "-e", "-f", "{{.ImportPath}}\t{{.Name}}\t{{if .Error}}{{.Error}}{{end}}"}, pkgs...)
	cmd := exec.CommandContext(ctx, goTool, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	lw := newLineWriter(prog, "") // go: downloading ...
	cmd.Stderr = io.MultiWriter(&stderr, lw)
	outb, err := cmd.Output()
	lw.Flush()
	if err != nil {
		return fmt.Errorf("build: go list: %w\n%s", err, strings.TrimSpace(stderr.String()))
	}
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(outb))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), "\t", 3)
		if len(f) < 3 {
			continue
		}
		switch {
		case f[2] != "":
			errs = append(errs, fmt.Errorf("%s: %s", f[0], strings.ReplaceAll(f[2], "\n", " ")))
		case f[1] != "main":
			errs = append(errs, fmt.Errorf("%s: package %s is not a main package", f[0], f[1]))
		}
	}
	return errors.Join(errs...)
}

// groupByBase splits pkgs into groups whose base names are distinct, since
// `go build -o dir/` names each binary after the last path element.
func groupByBase(pkgs []string) [][]string {
	var groups [][]string
	var seen []map[string]bool
	for _, p := range pkgs {
		b := binaryName(p)
		i := 0
		for ; i < len(groups); i++ {
			if !seen[i][b] {
				break
			}
		}
		if i == len(groups) {
			groups = append(groups, nil)
			seen = append(seen, map[string]bool{})
		}
		groups[i] = append(groups[i], p)
		seen[i][b] = true
	}
	return groups
}

// binaryName is the name `go build -o dir/` gives the main package p: its
// last path element, or the one before a major version suffix ("/v2").
func binaryName(p string) string {
	elems := strings.Split(p, "/")
	last := elems[len(elems)-1]
	if len(elems) > 1 && len(last) > 1 && last[0] == 'v' && strings.Trim(last[1:], "0123456789") == "" {
		return elems[len(elems)-2]
	}
	return last
}
