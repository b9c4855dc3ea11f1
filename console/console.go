// Package console is the operators' web console of sagas: an overview per
// definition, the list of sagas, one saga as a live timeline with its
// record, its definition drawn as a graph and its domain views, and the
// dead letters, with the actions of the admin API (abort, redrive,
// replay). It knows no saga: everything it shows comes from the admin API
// (ops.API, served beside it under /api/v1), from the definitions it
// serves, and from the domain views it is configured with (Views).
//
// The pages are plain HTML, CSS and JavaScript modules embedded in the
// binary (assets/), with no build step. They are served under a strict
// Content-Security-Policy: scripts and styles from the console itself
// only, no inline code, no eval, and Trusted Types required, so no string
// ever becomes markup; every value the pages show (event data is the
// outside world's) is set as text.
//
// Reads need no credentials. Actions send the operator's token and name,
// which the pages keep in the tab's sessionStorage (never in a page or a
// URL), as Authorization: Bearer and Ksaga-Actor; the API's Authorize
// decides (TokenAuth, or an OIDC verifier). Bearer headers are never sent
// by a browser on its own, so other sites cannot act through it.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/ksaga/ksaga/ops"
)

//go:embed assets
var embedded embed.FS

// ContentSecurityPolicy is the policy of every answer: the console's own
// scripts, styles and API only; no inline code, no eval, no frames, no
// forms posted anywhere, and Trusted Types, so a string can never be
// turned into markup or script.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; " +
	"require-trusted-types-for 'script'; trusted-types 'none'"

// Options configure a Console.
type Options struct {
	// API is the admin API the console shows and serves under /api/v1.
	API *ops.API
	// Views are the domain views shown with a saga (ParseViews).
	Views []View
	// Transport reaches the views' services (default
	// http.DefaultTransport); the console never follows their redirects.
	Transport http.RoundTripper
	Logger    *slog.Logger
}

// Console serves the console's pages and the admin API.
type Console struct {
	api    *ops.API
	views  *viewer
	files  map[string]asset
	logger *slog.Logger
}

// asset is one embedded file, ready to serve.
type asset struct {
	body []byte
	typ  string
	etag string
}

// New returns a Console; it fails if the views are invalid.
func New(o Options) (*Console, error) {
	if o.API == nil || o.API.Op == nil {
		return nil, fmt.Errorf("console: an API with an Operator is required")
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	c := &Console{api: o.API, files: map[string]asset{}, logger: logger}
	if err := checkViews(o.Views); err != nil {
		return nil, err
	}
	c.views = newViewer(o.Views, o.Transport, o.API.Op, logger)
	err := fs.WalkDir(embedded, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := embedded.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		typ := mime.TypeByExtension(path.Ext(p))
		if path.Ext(p) == ".js" {
			typ = "text/javascript; charset=utf-8" // whatever the system's mime table says
		}
		c.files[strings.TrimPrefix(p, "assets/")] = asset{body: b, typ: typ, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("console: assets: %w", err)
	}
	return c, nil
}

// Routes returns the console's handlers by pattern: its pages, its
// assets, its own small API under /console/v1 and the admin API, every
// one with the console's security headers.
func (c *Console) Routes() map[string]http.Handler {
	page := http.HandlerFunc(c.page)
	routes := map[string]http.Handler{
		// the pages: one document, which routes by its path
		"GET /{$}":                         page,
		"GET /sagas":                       page,
		"GET /sagas/{id}":                  page,
		"GET /deadletters":                 page,
		"GET /assets/{file}":               http.HandlerFunc(c.asset),
		"GET /console/v1/config":           http.HandlerFunc(c.config),
		"GET /console/v1/sagas/{id}/views": http.HandlerFunc(c.views.serve),
	}
	for p, h := range c.api.Routes() {
		routes[p] = h
	}
	for p, h := range routes {
		routes[p] = secure(h)
	}
	return routes
}

// secure sets the security headers of every answer.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", ContentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

// page serves the document, with preload links for the API reads its
// route starts with, so they run while the scripts load.
func (c *Console) page(w http.ResponseWriter, r *http.Request) {
	var reads []string
	switch id := r.PathValue("id"); {
	case r.URL.Path == "/":
		reads = []string{"/api/v1/overview", "/api/v1/sagas?summary=true&limit=15"}
	case id != "" && plainID.MatchString(id):
		reads = []string{"/api/v1/definitions", "/console/v1/config", "/api/v1/sagas/" + id}
	}
	var links strings.Builder
	for _, u := range reads {
		links.WriteString(`<link rel="preload" href="` + html.EscapeString(u) + `" as="fetch" crossorigin="anonymous">` + "\n")
	}
	body := bytes.Replace(c.files["index.html"].body, []byte("<!--preload-->\n"), []byte(links.String()), 1)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
}

// plainID is a saga id whose path the pages spell as the server does.
var plainID = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,200}$`)

func (c *Console) asset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if name == "index.html" {
		http.Redirect(w, r, "/", http.StatusMovedPermanently)
		return
	}
	c.serveAsset(w, r, name)
}

// serveAsset answers an embedded file; a browser revalidates it on every
// load (no-cache) and gets 304 while it is unchanged.
func (c *Console) serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	a, ok := c.files[name]
	if !ok {
		ops.WriteJSON(w, http.StatusNotFound, ops.Error{Error: "not found: " + r.URL.Path})
		return
	}
	w.Header().Set("Content-Type", a.typ)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// Config is the body of GET /console/v1/config: what the pages need to
// know about the console (nothing secret).
type Config struct {
	// Actions reports whether actions can be authorized at all (a token
	// or OIDC is configured).
	Actions bool `json:"actions"`
	// Views are the domain views configured, by definition.
	Views []ViewInfo `json:"views"`
}

// ViewInfo is a view as the pages know it.
type ViewInfo struct {
	Name string `json:"name"`
	Saga string `json:"saga,omitempty"`
}

func (c *Console) config(w http.ResponseWriter, _ *http.Request) {
	cfg := Config{Actions: c.api.Authorize != nil, Views: []ViewInfo{}}
	for _, v := range c.views.views {
		cfg.Views = append(cfg.Views, ViewInfo{Name: v.Name, Saga: v.Saga})
	}
	ops.WriteJSON(w, http.StatusOK, cfg)
}
