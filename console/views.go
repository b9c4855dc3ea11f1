package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/saga"
)

// EnvViews is the environment variable of the console's domain views
// (JSON, an array of View).
const EnvViews = "KSAGA_CONSOLE_VIEWS"

// View is a domain view shown with the sagas of a definition: a read
// endpoint of the saga's own functions (a user's balance, a SKU's stock),
// addressed by values of the saga's record. The console calls it, not the
// browser (the functions are cluster-local), and only ever at Base: the
// record's values fill Path's placeholders as single escaped path segments
// or query values, so they can never name another host or path prefix.
//
// Placeholders: {id}, {key}, {saga}, {data.<field>...} (the saga's data),
// {outputs.<step>.<field>...} (a step's output). A field path that
// crosses an array takes every element's value ({data.items.sku}: one call
// per SKU, up to 8 per view).
type View struct {
	// Name identifies the view: 1-32 of [a-z0-9-].
	Name string `json:"name"`
	// Title is shown above the view's answer; it may hold placeholders.
	Title string `json:"title"`
	// Saga is the definition whose sagas show the view ("" for all).
	Saga string `json:"saga,omitempty"`
	// Base is the service's base URL (http or https, no query), or the
	// name of an environment variable holding one (so `ksaga dev` and a
	// cluster each give their own address, as for any service URL).
	Base string `json:"base"`
	// Path is appended to Base: it starts with "/" and may hold
	// placeholders in its segments and query values.
	Path string `json:"path"`
}

// Bounds of the views.
const (
	maxPerView   = 8        // calls one view makes for one saga
	maxViewBody  = 64 << 10 // bytes of one answer
	viewTimeout  = 3 * time.Second
	maxValueSize = 200 // characters of one placeholder's value
)

var (
	viewName    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	placeholder = regexp.MustCompile(`\{([^{}]*)\}`)
	fieldPath   = regexp.MustCompile(`^(id|key|saga|data(\.[A-Za-z0-9_-]+)+|outputs(\.[A-Za-z0-9_-]+){2,})$`)
	envName     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// ParseViews reads views from JSON (an array of View; "" for none),
// resolving each Base that names an environment variable with getenv,
// and checks them.
func ParseViews(raw string, getenv func(string) string) ([]View, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, nil
	}
	var views []View
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&views); err != nil {
		return nil, fmt.Errorf("%s: want a JSON array of views: %w", EnvViews, err)
	}
	for i := range views {
		b := views[i].Base
		if envName.MatchString(b) {
			if views[i].Base = getenv(b); views[i].Base == "" {
				return nil, fmt.Errorf("%s: view %q: its base %s is not set", EnvViews, views[i].Name, b)
			}
		}
	}
	if err := checkViews(views); err != nil {
		return nil, fmt.Errorf("%s: %w", EnvViews, err)
	}
	return views, nil
}

// checkViews validates views.
func checkViews(views []View) error {
	var errs []error
	seen := map[string]bool{}
	for _, v := range views {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("view %q: "+format, append([]any{v.Name}, args...)...))
		}
		if !viewName.MatchString(v.Name) {
			bad("the name must be 1-32 of a-z, 0-9 and '-'")
		}
		if seen[v.Name] {
			bad("defined twice")
		}
		seen[v.Name] = true
		u, err := url.Parse(v.Base)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(v.Base, "{}") {
			bad("base %q: want an http(s) URL without query or placeholders, or the name of a variable holding one", v.Base)
		}
		if !strings.HasPrefix(v.Path, "/") {
			bad("path %q must start with /", v.Path)
		}
		for _, t := range []string{v.Title, v.Path} {
			if strings.Count(t, "{") != strings.Count(t, "}") || len(placeholder.FindAllString(t, -1)) != strings.Count(t, "{") {
				bad("%q: unbalanced braces", t)
			}
			for _, m := range placeholder.FindAllStringSubmatch(t, -1) {
				if !fieldPath.MatchString(m[1]) {
					bad("placeholder {%s}: want id, key, saga, data.<field>… or outputs.<step>.<field>…", m[1])
				}
			}
		}
		if p, _, _ := strings.Cut(v.Path, "?"); strings.Contains(p, "{") {
			for _, seg := range strings.Split(p, "/") {
				if strings.Contains(seg, "{") && !placeholder.MatchString(seg) {
					bad("path %q: a placeholder is a whole segment or part of one", v.Path)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// viewer calls the views for a saga.
type viewer struct {
	views  []View
	client *http.Client
	op     *ops.Operator
	logger *slog.Logger
}

func newViewer(views []View, rt http.RoundTripper, op *ops.Operator, logger *slog.Logger) *viewer {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return &viewer{views: views, op: op, logger: logger, client: &http.Client{Transport: rt, Timeout: viewTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// ViewResult is one call of a view, as GET /console/v1/sagas/{id}/views
// answers it: the filled title and path, and the service's status and
// JSON answer, or why there is none.
type ViewResult struct {
	Name   string          `json:"name"`
	Title  string          `json:"title"`
	Path   string          `json:"path,omitempty"`
	Status int             `json:"status,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// serve answers the views of one saga: {"views": [ViewResult...]}.
func (v *viewer) serve(w http.ResponseWriter, r *http.Request) {
	st, err := v.op.Store.Get(r.Context(), r.PathValue("id"))
	if err == nil {
		if _, ok := v.op.Sagas.Get(st.Saga); !ok {
			err = saga.ErrNotFound
		}
	}
	switch {
	case errors.Is(err, saga.ErrNotFound):
		ops.WriteJSON(w, http.StatusNotFound, ops.Error{Error: "not found"})
		return
	case err != nil:
		v.logger.WarnContext(r.Context(), "views: read the saga", "error", err.Error())
		ops.WriteJSON(w, http.StatusServiceUnavailable, ops.Error{Error: "the saga store is unavailable, retry later"})
		return
	}
	type call struct {
		ViewResult
		url string
	}
	var calls []*call
	for _, view := range v.views {
		if view.Saga != "" && view.Saga != st.Saga {
			continue
		}
		fills, err := fill(view, st)
		if err != nil {
			calls = append(calls, &call{ViewResult: ViewResult{Name: view.Name, Title: view.Name, Error: err.Error()}})
			continue
		}
		for _, f := range fills {
			calls = append(calls, &call{ViewResult: ViewResult{Name: view.Name, Title: f.title, Path: f.path}, url: strings.TrimSuffix(view.Base, "/") + f.path})
		}
	}
	var wg sync.WaitGroup
	for _, c := range calls {
		if c.url == "" {
			continue
		}
		wg.Go(func() {
			c.Status, c.Data, c.Error = v.get(r.Context(), c.url)
			if c.Error != "" {
				v.logger.WarnContext(r.Context(), "view call failed", "view", c.Name, "path", c.Path, "error", c.Error)
			}
		})
	}
	wg.Wait()
	out := make([]ViewResult, 0, len(calls))
	for _, c := range calls {
		out = append(out, c.ViewResult)
	}
	ops.WriteJSON(w, http.StatusOK, map[string]any{"views": out})
}

// get calls one view URL and returns its status and JSON answer.
func (v *viewer) get(ctx context.Context, u string) (int, json.RawMessage, string) {
	ctx, cancel := context.WithTimeout(ctx, viewTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, "bad URL"
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is the console's business, not the page's
		}
		return 0, nil, "unreachable: " + err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxViewBody+1))
	switch {
	case err != nil:
		return resp.StatusCode, nil, "reading the answer: " + err.Error()
	case len(body) > maxViewBody:
		return resp.StatusCode, nil, fmt.Sprintf("the answer is over %d KiB", maxViewBody>>10)
	case !json.Valid(body):
		return resp.StatusCode, nil, "the answer is not JSON"
	}
	var compact bytes.Buffer
	_ = json.Compact(&compact, body)
	return resp.StatusCode, compact.Bytes(), ""
}

// filled is one call of a view: its title and path.
type filled struct{ title, path string }

// fill fills a view's placeholders from the saga's record: one call per
// combination of values, up to maxPerView.
func fill(view View, st saga.State) ([]filled, error) {
	var data any
	if len(st.Data) > 0 {
		dec := json.NewDecoder(bytes.NewReader(st.Data))
		dec.UseNumber()
		if err := dec.Decode(&data); err != nil {
			return nil, fmt.Errorf("the saga's data is not JSON")
		}
	}
	outputs := map[string]any{}
	for step, raw := range st.Outputs {
		var o any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if dec.Decode(&o) == nil {
			outputs[step] = o
		}
	}
	// the values of every placeholder of the path (the title follows)
	names := []string{}
	for _, m := range placeholder.FindAllStringSubmatch(view.Path, -1) {
		if !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
	}
	combos := []map[string]string{{}}
	for _, name := range names {
		vals := values(name, st, data, outputs)
		if len(vals) == 0 {
			return nil, fmt.Errorf("the saga has no %s", name)
		}
		var next []map[string]string
		for _, c := range combos {
			for _, val := range vals {
				m := map[string]string{name: val}
				for k, x := range c {
					m[k] = x
				}
				if len(next) < maxPerView {
					next = append(next, m)
				}
			}
		}
		combos = next
	}
	out := make([]filled, 0, len(combos))
	for _, c := range combos {
		p, q, _ := strings.Cut(view.Path, "?")
		p = placeholder.ReplaceAllStringFunc(p, func(s string) string { return url.PathEscape(c[s[1:len(s)-1]]) })
		if q != "" {
			q = placeholder.ReplaceAllStringFunc(q, func(s string) string { return url.QueryEscape(c[s[1:len(s)-1]]) })
			p += "?" + q
		}
		title := placeholder.ReplaceAllStringFunc(view.Title, func(s string) string {
			name := s[1 : len(s)-1]
			if v, ok := c[name]; ok {
				return v
			}
			if vals := values(name, st, data, outputs); len(vals) > 0 {
				return strings.Join(vals, ", ")
			}
			return "?"
		})
		out = append(out, filled{title: title, path: p})
	}
	return out, nil
}

// values returns a placeholder's values in the record: scalars only, at
// most maxPerView distinct ones, none that could step out of a path
// segment ("", ".", "..", a slash) or is overlong.
func values(name string, st saga.State, data any, outputs map[string]any) []string {
	var raw []any
	parts := strings.Split(name, ".")
	switch parts[0] {
	case "id":
		raw = []any{st.ID}
	case "key":
		raw = []any{st.Key}
	case "saga":
		raw = []any{st.Saga}
	case "data":
		raw = walk(data, parts[1:])
	case "outputs":
		raw = walk(outputs[parts[1]], parts[2:])
	}
	var out []string
	for _, r := range raw {
		var s string
		switch t := r.(type) {
		case string:
			s = t
		case json.Number:
			s = t.String()
		case bool:
			s = strconv.FormatBool(t)
		default:
			continue
		}
		if s == "" || s == "." || s == ".." || len(s) > maxValueSize || strings.ContainsFunc(s, unsafeRune) || slices.Contains(out, s) {
			continue
		}
		if out = append(out, s); len(out) == maxPerView {
			break
		}
	}
	return out
}

// walk follows a field path into JSON, through arrays.
func walk(v any, path []string) []any {
	if len(path) == 0 {
		if a, ok := v.([]any); ok {
			return a
		}
		return []any{v}
	}
	switch t := v.(type) {
	case map[string]any:
		return walk(t[path[0]], path[1:])
	case []any:
		var out []any
		for _, e := range t {
			out = append(out, walk(e, path)...)
		}
		return out
	}
	return nil
}

// unsafeRune reports a character a placeholder's value may not hold: a
// path separator (even escaped, some servers decode it) or a control.
func unsafeRune(r rune) bool { return r == '/' || r == '\\' || r < ' ' || r == 0x7f }
