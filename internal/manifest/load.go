package manifest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DefaultNamespace is the namespace given to namespaced objects that have no
// metadata.namespace, unless WithNamespace says otherwise (like `kubectl -n`).
const DefaultNamespace = "default"

// Option configures Load.
type Option func(*options)

type options struct {
	namespace       string
	features        map[string]string // eventing config-features
	servingFeatures map[string]string // serving config-features
}

// WithNamespace sets the namespace given to namespaced objects that have no
// metadata.namespace, like `kubectl apply -n NS`. The default is "default".
func WithNamespace(ns string) Option {
	return func(o *options) { o.namespace = ns }
}

// WithFeatures sets Knative Eventing feature flags, as the config-features
// ConfigMap would (e.g. {"delivery-retryafter": "enabled"}). Flags not given
// keep the defaults of Eventing's features.yaml. Calling it more than once
// merges the maps.
func WithFeatures(flags map[string]string) Option {
	return func(o *options) {
		if o.features == nil {
			o.features = make(map[string]string, len(flags))
		}
		for k, v := range flags {
			o.features[k] = v
		}
	}
}

// WithServingFeatures sets Knative Serving feature flags, as Serving's
// config-features ConfigMap would (e.g. {"kubernetes.podspec-fieldref":
// "enabled"}). Flags not given keep Serving's defaults. Calling it more than
// once merges the maps.
func WithServingFeatures(flags map[string]string) Option {
	return func(o *options) {
		if o.servingFeatures == nil {
			o.servingFeatures = make(map[string]string, len(flags))
		}
		for k, v := range flags {
			o.servingFeatures[k] = v
		}
	}
}

// Load reads Kubernetes YAML the way `kubectl apply -R -f PATH...` would.
//
// Each path is a file or a folder; a folder contributes every *.yaml and
// *.yml file below it, recursively, in lexical order. Every document of a
// multi-document file is decoded strictly (unknown and duplicate fields are
// errors, as with kubectl's server-side field validation) into the Go type
// of its apiVersion/kind, given the default namespace if it is namespaced
// and has none, defaulted and validated as Knative's admission webhooks do
// on CREATE, and checked against the other documents for duplicates.
//
// Load returns an error without a Set only when a path cannot be read or an
// option is invalid. Otherwise it returns the Set, and if any problem has
// SeverityError, also an error of type Problems holding those errors. The Set
// (and its Problems field, which also holds the warnings) is usable either way.
func Load(paths []string, opts ...Option) (*Set, error) {
	o := options{namespace: DefaultNamespace}
	for _, opt := range opts {
		opt(&o)
	}
	if o.namespace == "" {
		o.namespace = DefaultNamespace
	}
	ctx, err := webhookContext(context.Background(), o.features, o.servingFeatures)
	if err != nil {
		return nil, err
	}
	files, err := listFiles(paths)
	if err != nil {
		return nil, err
	}
	l := newLoader(ctx, o.namespace)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		l.addFile(f, data)
	}
	return l.set, l.set.Problems.Err()
}

// listFiles expands folders and removes repeated files, keeping the order
// in which the files are first named.
func listFiles(paths []string) ([]string, error) {
	var files []string
	seen := make(map[string]bool)
	add := func(p string) {
		if c := filepath.Clean(p); !seen[c] {
			seen[c] = true
			files = append(files, p)
		}
	}
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		if !info.IsDir() {
			add(p)
			continue
		}
		// WalkDir visits entries in lexical order, as kubectl's -R does.
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			switch strings.ToLower(filepath.Ext(path)) {
			case ".yaml", ".yml":
				add(path)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
	}
	return files, nil
}

// document is one "---"-separated part of a file.
type document struct {
	Source
	data []byte
}

// splitDocuments splits a YAML stream at "---" lines, exactly where
// k8s.io/apimachinery's YAMLReader (used by kubectl) splits it: a line that
// starts with "---" followed only by blanks or a comment. Documents holding
// only blanks and comments are dropped, but still count for Index.
func splitDocuments(file string, data []byte) []document {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // UTF-8 BOM
	var (
		docs  []document
		cur   bytes.Buffer
		index int
		first int // first content line of the current document, 0 if none yet
		line  int
	)
	flush := func() {
		if first > 0 {
			docs = append(docs, document{Source: Source{File: file, Index: index, Line: first}, data: bytes.Clone(cur.Bytes())})
		}
		cur.Reset()
		first = 0
		index++
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, len(data)+1) // a line can be as long as the file
	for sc.Scan() {
		line++
		text := strings.TrimSuffix(sc.Text(), "\r")
		if rest, ok := strings.CutPrefix(text, "---"); ok {
			if r := strings.TrimSpace(rest); r == "" || strings.HasPrefix(r, "#") {
				flush()
				continue
			}
		}
		if first == 0 {
			if t := strings.TrimSpace(text); t != "" && !strings.HasPrefix(t, "#") {
				first = line
				// Keep the blank lines before the content out of the document
				// so that YAML error line numbers are relative to `first`.
				cur.Reset()
			}
		}
		cur.WriteString(text)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}
