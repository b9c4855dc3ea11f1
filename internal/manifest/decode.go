package manifest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// kindInfo describes a kind this package decodes.
type kindInfo struct {
	namespaced bool
	// newValue returns a pointer to a fresh typed object; nil means the
	// object is kept as *unstructured.Unstructured.
	newValue func() any
	// check runs the API server's basic checks (beyond ObjectMeta).
	check func(v any) field.ErrorList
	// noMeta: the document is not a real API object (Kustomization): no
	// name, namespace or duplicate checks.
	noMeta bool
}

// loader accumulates a Set from documents.
type loader struct {
	ctx       context.Context // the admission webhook context
	namespace string          // default namespace
	set       *Set
	seen      map[string]*Object // duplicate detection, by ID.key()
}

func newLoader(ctx context.Context, namespace string) *loader {
	return &loader{ctx: ctx, namespace: namespace, set: &Set{}, seen: make(map[string]*Object)}
}

// addFile decodes every document of one file.
func (l *loader) addFile(file string, data []byte) {
	for _, d := range splitDocuments(file, data) {
		l.addDocument(d)
	}
}

// problem records a problem about document d.
func (l *loader) problem(d document, obj string, sev Severity, code Code, fld, msg string) {
	l.problemAt(d, d.Line, obj, sev, code, fld, msg)
}

// problemAt records a problem about line of document d's file.
func (l *loader) problemAt(d document, line int, obj string, sev Severity, code Code, fld, msg string) {
	src := d.Source
	src.Line = line
	l.set.Problems = append(l.set.Problems, Problem{Source: src, Object: obj, Field: fld, Message: msg, Severity: sev, Code: code})
}

// keyLine is the file line of the document's top-level key (e.g. "kind"),
// or the document's first line.
func keyLine(d document, key string) int {
	for i, line := range strings.Split(string(d.data), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok && strings.HasPrefix(strings.TrimLeft(rest, " \t"), ":") {
			return d.Line + i
		}
	}
	return d.Line
}

// addDocument decodes, checks and records one document. It never panics: a
// panic in Knative or Kubernetes code becomes a Problem.
func (l *loader) addDocument(d document) {
	defer func() {
		if r := recover(); r != nil {
			l.problem(d, "", SeverityError, CodeInvalid, "", fmt.Sprintf("internal error while decoding: %v", r))
		}
	}()

	j, ok := l.toJSON(d)
	if !ok {
		return
	}
	if t := strings.TrimSpace(string(j)); t == "null" || t == "" {
		return // an empty document, e.g. a lone "~"
	}

	id, ok := l.head(d, j)
	if !ok {
		return
	}
	ki, known := lookupKind(id.APIVersion, id.Kind)
	if !known && !skipped(id.Group(), id.Kind) {
		fld, msg := unknownKind(id)
		l.problemAt(d, keyLine(d, fld), id.String(), SeverityError, CodeUnknownKind, fld, msg)
		return
	}
	if !known {
		var u map[string]any
		if err := kjson.UnmarshalCaseSensitivePreserveInts(j, &u); err != nil {
			l.problem(d, id.String(), SeverityError, CodeSyntax, "", err.Error())
			return
		}
		o := &Object{Source: d.Source, ID: id, Value: &unstructured.Unstructured{Object: u}}
		l.set.Skipped = append(l.set.Skipped, o)
		l.checkDuplicate(o)
		return
	}

	// Namespace defaulting, as kubectl -n does; kubectl drops the namespace
	// of cluster-scoped objects.
	switch {
	case ki.noMeta || !ki.namespaced:
		id.Namespace = ""
	case id.Namespace == "":
		id.Namespace = l.namespace
	}
	o := &Object{Source: d.Source, ID: id}
	obj := id.String()

	hard := l.decode(d, obj, j, ki, o)
	if o.Value == nil {
		return
	}
	if m, ok := o.Value.(metav1.Object); ok && !ki.noMeta {
		m.SetNamespace(id.Namespace)
	}
	if !ki.noMeta {
		for _, e := range checkMeta(o.Value, id, ki.namespaced) {
			l.problem(d, obj, SeverityError, CodeInvalid, e.Field, e.ErrorBody())
		}
	}
	if ki.check != nil {
		for _, e := range ki.check(o.Value) {
			l.problem(d, obj, SeverityError, CodeInvalid, e.Field, e.ErrorBody())
		}
	}
	// A document that did not even decode (a wrong type somewhere) is not
	// given to the webhook: its errors would follow from the decoding error.
	if !hard {
		for _, p := range webhook(l.ctx, o.Value) {
			p.Source, p.Object = d.Source, obj
			l.set.Problems = append(l.set.Problems, p)
		}
	}
	if s, ok := o.Value.(*corev1.Secret); ok {
		mergeStringData(s)
	}
	l.set.Objects = append(l.set.Objects, o)
	if !ki.noMeta {
		l.checkDuplicate(o)
	}
}

// toJSON converts the document to JSON. Duplicate keys are reported, and
// the document is then converted leniently so that its other problems show.
func (l *loader) toJSON(d document) ([]byte, bool) {
	j, err := yaml.YAMLToJSONStrict(d.data)
	if err == nil {
		return j, true
	}
	lenient, lerr := yaml.YAMLToJSON(d.data)
	code := CodeSchema
	if lerr != nil {
		code = CodeSyntax
	}
	// The problem is placed at the line the YAML error names (the first,
	// when it names several), not at the document's start.
	msg, line := fileLines(d, parserErrorLine(trimYAMLError(err.Error())))
	if line > 0 {
		msg = strings.Replace(msg, fmt.Sprintf("line %d: ", line), "", 1)
		line = min(line, d.Line+strings.Count(strings.TrimRight(string(d.data), "\n"), "\n"))
	} else {
		line = d.Line
	}
	l.problemAt(d, line, "", SeverityError, code, "", msg)
	return lenient, lerr == nil
}

// yamlParserProblems are the messages of the YAML parser's (not its
// scanner's) errors in go.yaml.in/yaml/v2, which sigs.k8s.io/yaml uses.
// The parser reports the 0-based line of the token it stopped at as if it
// were 1-based, one line early ("did not find expected key" on the line
// above the misindented one); parserErrorLine adds the missing line.
var yamlParserProblems = []string{
	"did not find expected ',' or ']'", "did not find expected ',' or '}'", "did not find expected '-' indicator",
	"did not find expected <document start>", "did not find expected <stream-start>", "did not find expected key",
	"did not find expected node content", "found duplicate %TAG directive", "found duplicate %YAML directive",
	"found incompatible YAML document", "found undefined tag handle",
}

// parserErrorLine corrects the line of a "yaml: line N: <parser problem>"
// message.
func parserErrorLine(msg string) string {
	rest, ok := strings.CutPrefix(msg, "yaml: line ")
	if !ok {
		return msg
	}
	num, problem, ok := strings.Cut(rest, ": ")
	n, err := strconv.Atoi(num)
	if !ok || err != nil || !slices.Contains(yamlParserProblems, problem) {
		return msg
	}
	return fmt.Sprintf("yaml: line %d: %s", n+1, problem)
}

// trimYAMLError drops the wrapping that sigs.k8s.io/yaml adds.
func trimYAMLError(s string) string {
	s = strings.TrimPrefix(s, "error converting YAML to JSON: ")
	s = strings.ReplaceAll(s, "yaml: unmarshal errors:\n  ", "yaml: ")
	return strings.Join(strings.Fields(s), " ")
}

// fileLines rewrites "line N" (relative to the document) to the line of
// the file, and returns the first such line (0 if there is none).
func fileLines(d document, msg string) (string, int) {
	var b strings.Builder
	first := 0
	for {
		before, after, found := strings.Cut(msg, "line ")
		b.WriteString(before)
		if !found {
			return b.String(), first
		}
		digits := len(after) - len(strings.TrimLeft(after, "0123456789"))
		n, err := strconv.Atoi(after[:digits])
		if err != nil {
			b.WriteString("line ")
			msg = after
			continue
		}
		line := n + d.Line - 1
		if first == 0 {
			first = line
		}
		fmt.Fprintf(&b, "line %d", line)
		msg = after[digits:]
	}
}

// head reads apiVersion, kind, namespace and name.
func (l *loader) head(d document, j []byte) (ID, bool) {
	var top map[string]json.RawMessage
	if err := kjson.UnmarshalCaseSensitivePreserveInts(j, &top); err != nil {
		l.problem(d, "", SeverityError, CodeSyntax, "", "not a Kubernetes object: the document is not a YAML mapping")
		return ID{}, false
	}
	var id ID
	var missing []string
	for _, f := range []struct {
		name string
		dst  *string
	}{{"apiVersion", &id.APIVersion}, {"kind", &id.Kind}} {
		raw, ok := top[f.name]
		if !ok || kjson.UnmarshalCaseSensitivePreserveInts(raw, f.dst) != nil || *f.dst == "" {
			missing = append(missing, f.name)
		}
	}
	// Best effort: strict decoding reports a malformed metadata.
	var meta map[string]json.RawMessage
	if raw, ok := top["metadata"]; ok && kjson.UnmarshalCaseSensitivePreserveInts(raw, &meta) == nil {
		_ = kjson.UnmarshalCaseSensitivePreserveInts(meta["name"], &id.Name)
		_ = kjson.UnmarshalCaseSensitivePreserveInts(meta["namespace"], &id.Namespace)
	}
	if len(missing) > 0 {
		obj := ""
		if id.Name != "" {
			obj = id.String()
		}
		l.problem(d, obj, SeverityError, CodeSchema, strings.Join(missing, ", "),
			"not a Kubernetes object: apiVersion and kind must be set (strings)")
		return id, false
	}
	return id, true
}

// decode decodes j strictly into o.Value. It reports whether decoding hit a
// hard error (a wrong type) as opposed to only strict-mode problems.
func (l *loader) decode(d document, obj string, j []byte, ki kindInfo, o *Object) (hard bool) {
	if ki.newValue == nil {
		var u map[string]any
		strictErrs, err := kjson.UnmarshalStrict(j, &u)
		l.reportDecode(d, obj, strictErrs, err)
		if err != nil {
			return true
		}
		o.Value = &unstructured.Unstructured{Object: u}
		return false
	}
	v := ki.newValue()
	strictErrs, err := kjson.UnmarshalStrict(j, v)
	if _, ok := v.(*corev1.Secret); ok && err != nil {
		if fld, msg := badBase64(j); fld != "" {
			l.reportDecode(d, obj, strictErrs, nil)
			l.problem(d, obj, SeverityError, CodeSchema, fld, msg)
			o.Value = v
			return true
		}
	}
	l.reportDecode(d, obj, strictErrs, err)
	o.Value = v
	return err != nil
}

// badBase64 finds the Secret data value that is not base64, which the JSON
// decoder reports without a field path.
func badBase64(j []byte) (fld, msg string) {
	var s struct {
		Data map[string]string `json:"data"`
	}
	if json.Unmarshal(j, &s) != nil {
		return "", ""
	}
	keys := make([]string, 0, len(s.Data))
	for k := range s.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, err := base64.StdEncoding.DecodeString(s.Data[k]); err != nil {
			return "data[" + k + "]", err.Error() + " (data holds base64; use stringData for plain text)"
		}
	}
	return "", ""
}

func (l *loader) reportDecode(d document, obj string, strictErrs []error, err error) {
	for _, e := range strictErrs {
		fld, msg := splitStrictError(e.Error())
		l.problem(d, obj, SeverityError, CodeSchema, fld, msg)
	}
	if err != nil {
		fld, msg := splitTypeError(err.Error())
		l.problem(d, obj, SeverityError, CodeSchema, fld, msg)
	}
}

// splitStrictError turns `json: unknown field "spec.filterz"` into
// ("spec.filterz", "unknown field").
func splitStrictError(s string) (fld, msg string) {
	s = strings.TrimPrefix(s, "json: ")
	for _, kind := range []string{"unknown field ", "duplicate field "} {
		if q, ok := strings.CutPrefix(s, kind); ok {
			if f, err := strconv.Unquote(q); err == nil {
				return f, strings.TrimSpace(kind)
			}
		}
	}
	return "", s
}

// splitTypeError turns `json: cannot unmarshal number into Go struct field
// ObjectMeta.metadata.annotations of type string` into
// ("metadata.annotations", "cannot decode number into a field of type string").
func splitTypeError(s string) (fld, msg string) {
	s = strings.TrimPrefix(s, "json: ")
	rest, ok := strings.CutPrefix(s, "cannot unmarshal ")
	if !ok {
		return "", s
	}
	value, rest, ok := strings.Cut(rest, " into Go struct field ")
	if !ok {
		return "", s
	}
	i := strings.LastIndex(rest, " of type ")
	if i < 0 {
		return "", s
	}
	path, typ := rest[:i], rest[i+len(" of type "):]
	// The path starts with the Go struct name and names embedded structs by
	// their Go names ("Service.spec.ConfigurationSpec.template..."); JSON
	// field names of Kubernetes types start with a lower-case letter.
	var elems []string
	for j, e := range strings.Split(path, ".") {
		if j == 0 || e == "" || (e[0] >= 'A' && e[0] <= 'Z') {
			continue
		}
		elems = append(elems, e)
	}
	return strings.Join(elems, "."), fmt.Sprintf("cannot decode %s into a field of type %s", value, typ)
}

// checkDuplicate reports an object already defined by an earlier document.
func (l *loader) checkDuplicate(o *Object) {
	k := o.key()
	first, dup := l.seen[k]
	if !dup {
		l.seen[k] = o
		return
	}
	l.set.Problems = append(l.set.Problems, Problem{
		Source:   o.Source,
		Object:   o.ID.String(),
		Field:    "metadata.name",
		Message:  fmt.Sprintf("duplicate object: %s is defined both in %s and in %s", o.ID, first.Source, o.Source),
		Severity: SeverityError,
		Code:     CodeDuplicate,
	})
}

// mergeStringData folds stringData into data, as the API server does on
// write (stringData wins).
func mergeStringData(s *corev1.Secret) {
	if len(s.StringData) == 0 {
		return
	}
	if s.Data == nil {
		s.Data = make(map[string][]byte, len(s.StringData))
	}
	for k, v := range s.StringData {
		s.Data[k] = []byte(v)
	}
	s.StringData = nil
}
