package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ksaga/ksaga/console"
	"github.com/ksaga/ksaga/knfunc"
	"github.com/ksaga/ksaga/ops"
	"github.com/ksaga/ksaga/saga"
)

// DefaultConsoleURL is the console of `ksaga dev` (namespace saga, port
// 8080).
const DefaultConsoleURL = "http://console.saga.localhost:8080"

const sagasUsage = `Usage:
  ksaga sagas list [flags]        a page of sagas, newest first
  ksaga sagas show ID [flags]     one saga: its record, history and dead letters
  ksaga sagas abort ID [flags]    fail a saga that has not ended: it compensates
  ksaga sagas redrive ID [flags]  resume a compensation_failed saga's compensation

They talk to a console's admin API (--console, $KSAGA_CONSOLE_URL; default
` + DefaultConsoleURL + `, the console of ksaga dev). Actions need its token
(--token, $KSAGA_CONSOLE_TOKEN) and are recorded in the saga's history with
your name (--actor, $KSAGA_ACTOR, default $USER).

Flags:
`

const deadLettersUsage = `Usage:
  ksaga deadletters list [flags]             a page of dead letters, newest first
  ksaga deadletters replay ID... [flags]     publish dead letters' events again
  ksaga deadletters replay --all FILTER      ... every one matching --saga, --type, --destination

They talk to a console's admin API (--console, $KSAGA_CONSOLE_URL; default
` + DefaultConsoleURL + `). Replays need its token (--token,
$KSAGA_CONSOLE_TOKEN) and are recorded with your name (--actor, $KSAGA_ACTOR,
default $USER).

Flags:
`

// operator is a console client: the flags every console command takes.
type operator struct {
	console, token, actor, output string
	client                        *http.Client
	stdout                        io.Writer
}

// consoleFlags adds the console flags to fs.
func consoleFlags(fs *flag.FlagSet, getenv func(string) string) *operator {
	o := &operator{client: knfunc.NewHTTPClient(30 * time.Second)}
	def := func(env, fallback string) string {
		if v := getenv(env); v != "" {
			return v
		}
		return fallback
	}
	fs.StringVar(&o.console, "console", def("KSAGA_CONSOLE_URL", DefaultConsoleURL), "the console's `URL` ($KSAGA_CONSOLE_URL)")
	fs.StringVar(&o.token, "token", getenv("KSAGA_CONSOLE_TOKEN"), "the console's action `token` ($KSAGA_CONSOLE_TOKEN)")
	fs.StringVar(&o.actor, "actor", def("KSAGA_ACTOR", getenv("USER")), "your `name`, recorded with actions ($KSAGA_ACTOR, $USER)")
	fs.StringVar(&o.output, "o", "table", "output: table or json")
	return o
}

// parseInterleaved parses flags that may come before or after the
// positional arguments, and returns those.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// apiError is an answer of the console that is not a success.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("console: %d %s", e.status, e.msg) }

// call sends a request to the console's API and returns the answer's body.
func (o *operator) call(ctx context.Context, method, path string, q url.Values) ([]byte, error) {
	base, err := url.Parse(o.console)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, usageError("--console %q: want an http(s) URL", o.console)
	}
	u := strings.TrimSuffix(o.console, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if method != http.MethodGet {
		if o.token != "" {
			req.Header.Set("Authorization", "Bearer "+o.token)
		}
		if a := console.ActorName(o.actor); a != "" {
			req.Header.Set(console.ActorHeader, a)
		}
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("console %s: %w (is it running? --console, $KSAGA_CONSOLE_URL)", o.console, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("console %s: %w", o.console, err)
	}
	if resp.StatusCode >= 300 {
		var e ops.Error
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(body))
		}
		if resp.StatusCode == http.StatusUnauthorized && o.token == "" {
			e.Error += " (give the console token: --token or $KSAGA_CONSOLE_TOKEN)"
		}
		return nil, &apiError{resp.StatusCode, e.Error}
	}
	return body, nil
}

// emit prints body as indented JSON (-o json), or decodes it into v and
// prints it with table.
func emit[T any](o *operator, body []byte, table func(w io.Writer, v T)) error {
	switch o.output {
	case "json":
		var b bytes.Buffer
		if err := json.Indent(&b, body, "", "  "); err != nil {
			return fmt.Errorf("console answered what is not JSON: %w", err)
		}
		b.WriteByte('\n')
		_, err := o.stdout.Write(b.Bytes())
		return err
	case "table":
		var v T
		if err := json.Unmarshal(body, &v); err != nil {
			return fmt.Errorf("console answered what this ksaga cannot read: %w", err)
		}
		tw := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
		table(tw, v)
		return tw.Flush()
	}
	return usageError("-o %q: want table or json", o.output)
}

// runSagas is `ksaga sagas`.
func runSagas(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ksaga sagas", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { _, _ = fmt.Fprint(fs.Output(), sagasUsage); fs.PrintDefaults() }
	o := consoleFlags(fs, getenv)
	o.stdout = stdout
	def := fs.String("saga", "", "list: only sagas of this `definition`")
	status := fs.String("status", "", "list: only sagas in this `status`")
	overdue := fs.Bool("overdue", false, "list: only unfinished sagas past their due time")
	from := fs.String("from", "", "list: created at or after `time` (RFC 3339)")
	to := fs.String("to", "", "list: created before `time` (RFC 3339)")
	q := fs.String("q", "", "list: find by saga id, correlation id or business `key`")
	limit := fs.Int("limit", 50, "list: page size (1-1000)")
	cursor := fs.String("cursor", "", "list: the next page's `cursor`, as the last page printed it")
	if len(args) == 0 {
		fs.Usage()
		return usageError("sagas: list, show, abort or redrive?")
	}
	cmd := args[0]
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError("sagas %s: %v", cmd, err)
	}
	needID := func() (string, error) {
		if len(pos) != 1 || pos[0] == "" {
			return "", usageError("sagas %s: want one saga id", cmd)
		}
		return pos[0], nil
	}
	switch cmd {
	case "list":
		if len(pos) > 0 {
			return usageError("sagas list: unexpected arguments %q", pos)
		}
		v := url.Values{"summary": {"true"}, "limit": {fmt.Sprint(*limit)}}
		for k, x := range map[string]string{"saga": *def, "status": *status, "from": *from, "to": *to, "q": *q, "cursor": *cursor} {
			if x != "" {
				v.Set(k, x)
			}
		}
		if *overdue {
			v.Set("overdue", "true")
		}
		body, err := o.call(ctx, http.MethodGet, "/api/v1/sagas", v)
		if err != nil {
			return err
		}
		return emit(o, body, sagaList)
	case "show":
		id, err := needID()
		if err != nil {
			return err
		}
		body, err := o.call(ctx, http.MethodGet, "/api/v1/sagas/"+url.PathEscape(id), nil)
		if err != nil {
			return err
		}
		return emit(o, body, sagaShow)
	case "abort", "redrive":
		id, err := needID()
		if err != nil {
			return err
		}
		body, err := o.call(ctx, http.MethodPost, "/api/v1/sagas/"+url.PathEscape(id)+"/"+cmd, nil)
		if err != nil {
			return err
		}
		return emit(o, body, func(w io.Writer, r struct {
			Step      string `json:"step"`
			EventType string `json:"event_type"`
			Applied   *bool  `json:"applied"`
		}) {
			switch {
			case cmd == "redrive":
				_, _ = fmt.Fprintf(w, "saga %s redriven: %s sent again, its compensation resumes\n", id, r.EventType)
			case r.Applied != nil && !*r.Applied:
				_, _ = fmt.Fprintf(w, "saga %s was aborted before at the %s step; %s sent again\n", id, r.Step, r.EventType)
			default:
				_, _ = fmt.Fprintf(w, "saga %s aborted at the %s step (%s): it compensates\n", id, r.Step, r.EventType)
			}
		})
	}
	fs.Usage()
	return usageError("sagas: unknown command %q", cmd)
}

func sagaList(w io.Writer, p ops.SagaPage) {
	_, _ = fmt.Fprintln(w, "ID\tSAGA\tKEY\tSTATUS\tSTEP\tCREATED\tTOOK\t")
	for _, v := range p.Sagas {
		end := time.Now()
		if v.Status.Terminal() {
			end = v.UpdatedAt
		}
		note := v.Reason
		if v.Overdue {
			note = strings.TrimSpace("overdue " + note)
		}
		_, _ = fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Saga, dash(v.Key), v.Status, dash(v.Step),
			v.CreatedAt.Local().Format(time.DateTime), end.Sub(v.CreatedAt).Round(time.Millisecond), note)
	}
	if p.Next != "" {
		_, _ = fmt.Fprintf(w, "\nmore: --cursor %s\n", p.Next)
	}
}

func sagaShow(w io.Writer, v ops.SagaView) {
	kv := func(k, v string) {
		if v != "" {
			_, _ = fmt.Fprintf(w, "%s:\t%s\n", k, v)
		}
	}
	kv("Saga", v.ID)
	kv("Definition", v.Saga)
	kv("Key", v.Key)
	st := string(v.Status)
	if v.Overdue {
		st += " (overdue)"
	}
	kv("Status", st)
	kv("Version", fmt.Sprint(v.Version))
	kv("Created", v.CreatedAt.Local().Format(time.RFC3339Nano))
	kv("Updated", v.UpdatedAt.Local().Format(time.RFC3339Nano))
	kv("Deadline", v.Deadline.Local().Format(time.RFC3339))
	kv("Failed step", v.FailedStep)
	kv("Reason", v.Reason)
	kv("To undo", strings.Join(v.Compensate, " → "))
	if v.Next != nil {
		kv("Waits on", fmt.Sprintf("%s (id %s, version %d)", v.Next.Type, v.Next.ID, v.Next.Version))
	}
	kv("Trace", v.TraceURL)
	_, _ = fmt.Fprintln(w, "\n#\tSTEP\tOUTCOME\tKIND\tAT\tVER\tEVENT TYPE\tEVENT ID\tCAUSED BY\tREASON / ACTOR")
	for i, e := range v.Steps {
		kind, cause := "", ""
		if i < len(v.Kinds) {
			kind = v.Kinds[i]
		}
		if i < len(v.Causes) {
			cause = v.Causes[i]
		}
		if kind == "" {
			kind = "operator"
			if e.Note {
				kind = "note"
			}
		}
		note := e.Reason
		if e.Actor != "" {
			note = strings.TrimSpace(note + " by " + e.Actor)
		}
		if e.Redelivered > 0 {
			note = strings.TrimSpace(fmt.Sprintf("%s (redelivered %d×)", note, e.Redelivered))
		}
		_, _ = fmt.Fprintf(w, "%d\t%s\t%s\t%s\t+%s\t%d\t%s\t%s\t%s\t%s\n", i+1, dash(e.Step), e.Outcome, kind,
			e.At.Sub(v.CreatedAt).Round(time.Millisecond), e.Version, e.EventType, dash(e.EventID), dash(cause), note)
	}
	if len(v.Data) > 0 {
		_, _ = fmt.Fprintf(w, "\nData:\t%s\n", v.Data)
	}
	for step, out := range v.Outputs {
		_, _ = fmt.Fprintf(w, "Output of %s:\t%s\n", step, out)
	}
	if len(v.DeadLetters) > 0 {
		_, _ = fmt.Fprintln(w, "\nDead letters:")
		deadLetterRows(w, v.DeadLetters)
	}
}

// runDeadLetters is `ksaga deadletters`.
func runDeadLetters(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ksaga deadletters", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { _, _ = fmt.Fprint(fs.Output(), deadLettersUsage); fs.PrintDefaults() }
	o := consoleFlags(fs, getenv)
	o.stdout = stdout
	sagaID := fs.String("saga", "", "only the dead letters of this saga `id`")
	typ := fs.String("type", "", "only dead letters of this event `type`")
	dest := fs.String("destination", "", "only dead letters that could not reach this `URL`")
	all := fs.Bool("all", false, "replay: every dead letter matching --saga, --type and --destination")
	limit := fs.Int("limit", 50, "list: page size (1-1000)")
	cursor := fs.String("cursor", "", "list: the next page's `cursor`")
	if len(args) == 0 {
		fs.Usage()
		return usageError("deadletters: list or replay?")
	}
	cmd := args[0]
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError("deadletters %s: %v", cmd, err)
	}
	filter := url.Values{}
	for k, x := range map[string]string{"saga": *sagaID, "type": *typ, "destination": *dest} {
		if x != "" {
			filter.Set(k, x)
		}
	}
	switch cmd {
	case "list":
		if len(pos) > 0 {
			return usageError("deadletters list: unexpected arguments %q", pos)
		}
		filter.Set("limit", fmt.Sprint(*limit))
		if *cursor != "" {
			filter.Set("cursor", *cursor)
		}
		body, err := o.call(ctx, http.MethodGet, "/api/v1/deadletters", filter)
		if err != nil {
			return err
		}
		return emit(o, body, func(w io.Writer, p saga.DeadLetterPage) {
			deadLetterRows(w, p.DeadLetters)
			if p.Next != "" {
				_, _ = fmt.Fprintf(w, "\nmore: --cursor %s\n", p.Next)
			}
		})
	case "replay":
		switch {
		case *all && len(pos) > 0:
			return usageError("deadletters replay: ids or --all, not both")
		case *all:
			if len(filter) == 0 {
				return usageError("deadletters replay --all: give a filter (--saga, --type or --destination)")
			}
			body, err := o.call(ctx, http.MethodPost, "/api/v1/deadletters/replay", filter)
			if err != nil {
				return err
			}
			return emit(o, body, func(w io.Writer, r struct {
				Replayed []string `json:"replayed"`
			}) {
				_, _ = fmt.Fprintf(w, "replayed %d dead letter(s)\n", len(r.Replayed))
				for _, id := range r.Replayed {
					_, _ = fmt.Fprintln(w, id)
				}
			})
		case len(pos) == 0:
			return usageError("deadletters replay: give dead letter ids, or --all with a filter")
		}
		var replayed []json.RawMessage
		for _, id := range pos {
			body, err := o.call(ctx, http.MethodPost, "/api/v1/deadletters/"+url.PathEscape(id)+"/replay", nil)
			if err != nil {
				return fmt.Errorf("replay %s: %w", id, err)
			}
			replayed = append(replayed, body)
			if o.output == "table" {
				var dl saga.DeadLetter
				_ = json.Unmarshal(body, &dl)
				_, _ = fmt.Fprintf(stdout, "replayed %s: %s published again\n", id, dl.EventType)
			}
		}
		if o.output == "table" {
			return nil
		}
		b, _ := json.Marshal(replayed)
		return emit(o, b, func(io.Writer, any) {})
	}
	fs.Usage()
	return usageError("deadletters: unknown command %q", cmd)
}

func deadLetterRows(w io.Writer, dls []saga.DeadLetter) {
	_, _ = fmt.Fprintln(w, "ID\tTIME\tSAGA\tEVENT TYPE\tDESTINATION\tCODE\tHANDLING\tREPLAYED")
	for _, d := range dls {
		replayed := ""
		if d.ReplayedBy != "" {
			replayed = d.ReplayedBy + " " + d.ReplayedAt.Local().Format(time.DateTime)
		}
		_, _ = fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.At.Local().Format(time.DateTime), dash(d.SagaID), d.EventType,
			dash(d.Destination), dash(d.Code), d.Handling, replayed)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// version is ksaga's version, from the build information Go records.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "ksaga (unknown version)"
	}
	v := bi.Main.Version
	var rev, at string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	out := "ksaga " + v
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		out += " (" + rev
		if at != "" {
			out += ", " + at
		}
		if modified {
			out += ", modified"
		}
		out += ")"
	}
	return out + " " + bi.GoVersion + " " + runtime.GOOS + "/" + runtime.GOARCH
}
