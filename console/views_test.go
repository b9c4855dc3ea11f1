package console_test

import (
	"encoding/json"
	"fmt"
	"github.com/chromedp/chromedp"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/ksaga/ksaga/console"
)

func TestParseViews(t *testing.T) {
	env := map[string]string{"PAYMENT_URL": "http://payment.saga.svc.cluster.local"}
	views, err := console.ParseViews(`[{"name":"balance","title":"Balance of {data.user_id}","saga":"order","base":"PAYMENT_URL","path":"/balances/{data.user_id}"}]`,
		func(k string) string { return env[k] })
	if err != nil || len(views) != 1 || views[0].Base != env["PAYMENT_URL"] {
		t.Fatalf("%+v %v", views, err)
	}
	if v, err := console.ParseViews("", nil); v != nil || err != nil {
		t.Fatalf("none: %v %v", v, err)
	}
	for _, bad := range []string{
		`{}`, `[{"name":"x","base":"http://a","path":"/x","extra":1}]`,
		`[{"name":"Bad Name","base":"http://a","path":"/x"}]`,
		`[{"name":"x","base":"http://a","path":"/x"},{"name":"x","base":"http://a","path":"/y"}]`,
		`[{"name":"x","base":"ftp://a","path":"/x"}]`,
		`[{"name":"x","base":"http://{data.host}","path":"/x"}]`,
		`[{"name":"x","base":"http://a?x=1","path":"/x"}]`,
		`[{"name":"x","base":"UNSET_URL","path":"/x"}]`,
		`[{"name":"x","base":"http://a","path":"x"}]`,
		`[{"name":"x","base":"http://a","path":"/x/{data.a"}]`,
		`[{"name":"x","base":"http://a","path":"/x/{env.SECRET}"}]`,
		`[{"name":"x","base":"http://a","path":"/x/{data}"}]`,
		`[{"name":"x","base":"http://a","path":"/x/{outputs.step}"}]`,
	} {
		if _, err := console.ParseViews(bad, func(string) string { return "" }); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

type viewsAnswer struct {
	Views []console.ViewResult `json:"views"`
}

// TestViews: a view is called at its base only, once per value of its
// placeholders, each an escaped segment; the record's values can name no
// other host or path, and the answer reaches the page only as JSON.
func TestViews(t *testing.T) {
	other := newDomain(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{"leaked":true}`)) })
	svc := newDomain(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/redirect/"):
			http.Redirect(w, r, other.URL+"/stolen", http.StatusFound)
		case strings.HasPrefix(r.URL.Path, "/html/"):
			_, _ = w.Write([]byte("<html>hi</html>"))
		case strings.HasPrefix(r.URL.Path, "/big/"):
			_, _ = w.Write([]byte(`"` + strings.Repeat("x", 70<<10) + `"`))
		case strings.HasPrefix(r.URL.Path, "/missing/"):
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"no such thing"}`))
		default:
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "q": r.URL.Query().Get("q"), "html": "<img src=x onerror=alert(1)>"})
		}
	})
	views := []console.View{
		{Name: "by-user", Title: "User {data.user}", Saga: "trip", Base: svc.URL + "/api", Path: "/users/{data.user}?q={id}"},
		{Name: "by-item", Title: "Item {data.items.sku}", Base: svc.URL, Path: "/items/{data.items.sku}"},
		{Name: "other-saga", Title: "never", Saga: "nope", Base: svc.URL, Path: "/x/{id}"},
		{Name: "redirect", Title: "r", Base: svc.URL, Path: "/redirect/{id}"},
		{Name: "html", Title: "h", Base: svc.URL, Path: "/html/{id}"},
		{Name: "big", Title: "b", Base: svc.URL, Path: "/big/{id}"},
		{Name: "missing", Title: "m", Base: svc.URL, Path: "/missing/{id}"},
		{Name: "absent", Title: "a", Base: svc.URL, Path: "/absent/{data.nothing}"},
	}
	f := newFixture(t, views)
	items := []map[string]any{{"sku": "book"}, {"sku": "a b?c#d"}, {"sku": "../../admin"}, {"sku": ".."}, {"sku": "x/y"}, {"sku": "book"}, {"sku": map[string]any{"nested": 1}}}
	for i := range 10 {
		items = append(items, map[string]any{"sku": fmt.Sprintf("s%d", i)})
	}
	f.Kit.Run("v1", map[string]any{"user": 7, "items": items}, "test.mail.sent")

	var got viewsAnswer
	if resp := f.get(t, "/console/v1/sagas/v1/views", &got); resp.StatusCode != http.StatusOK {
		t.Fatalf("%d", resp.StatusCode)
	}
	by := map[string][]console.ViewResult{}
	for _, v := range got.Views {
		by[v.Name] = append(by[v.Name], v)
	}
	if u := by["by-user"]; len(u) != 1 || u[0].Title != "User 7" || u[0].Status != 200 || !strings.Contains(string(u[0].Data), `"path":"/api/users/7","q":"v1"`) {
		t.Fatalf("by-user: %+v", u)
	}
	var skus []string
	for _, v := range by["by-item"] {
		skus = append(skus, v.Title)
	}
	want := []string{"Item book", "Item a b?c#d", "Item s0", "Item s1", "Item s2", "Item s3", "Item s4", "Item s5"}
	if !slices.Equal(skus, want) {
		t.Fatalf("by-item calls %q, want %q (distinct scalars without path separators, at most 8)", skus, want)
	}
	if _, ok := by["other-saga"]; ok {
		t.Fatal("a view of another definition was called")
	}
	if r := by["redirect"][0]; r.Status != http.StatusFound || r.Data != nil || r.Error == "" {
		t.Fatalf("redirect: %+v", r)
	}
	if len(other.asked()) != 0 {
		t.Fatalf("a redirect was followed to %v", other.asked())
	}
	if r := by["html"][0]; r.Error != "the answer is not JSON" || r.Data != nil {
		t.Fatalf("html: %+v", r)
	}
	if r := by["big"][0]; !strings.Contains(r.Error, "over 64 KiB") {
		t.Fatalf("big: %+v", r)
	}
	if r := by["missing"][0]; r.Status != 404 || !strings.Contains(string(r.Data), "no such thing") {
		t.Fatalf("missing: %+v", r)
	}
	if r := by["absent"][0]; r.Error == "" || r.Path != "" {
		t.Fatalf("absent: %+v", r)
	}
	for _, p := range svc.asked() {
		path := strings.SplitN(p, "|", 2)[1]
		if !strings.HasPrefix(path, "/api/users/") && !strings.HasPrefix(path, "/items/") && !strings.HasPrefix(path, "/redirect/") &&
			!strings.HasPrefix(path, "/html/") && !strings.HasPrefix(path, "/big/") && !strings.HasPrefix(path, "/missing/") {
			t.Errorf("the service was asked %s", p)
		}
		if strings.Contains(path, "..") || strings.Contains(path, "admin") {
			t.Errorf("a value stepped out of its segment: %s", p)
		}
	}
	if !slices.Contains(svc.asked(), "|/items/a b?c#d?") {
		t.Errorf("a value is one escaped segment: %v", svc.asked())
	}
	if resp := f.get(t, "/console/v1/sagas/nope/views", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown saga: %d", resp.StatusCode)
	}
}

// TestViewsInTheBrowser: a view's answer is shown as text, and the page
// still reports nothing wrong.
func TestViewsInTheBrowser(t *testing.T) {
	svc := newDomain(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"balance_cents":100000,"note":"<img src=x onerror=\"window.__xss=1\">"}`))
	})
	f := newFixture(t, []console.View{{Name: "balance", Title: "Balance of {data.user}", Base: svc.URL, Path: "/balances/{data.user}"}})
	f.Kit.Run("v2", map[string]any{"user": 1}, "test.mail.sent")
	tab := startTab(t)
	if err := tab.Do(navTimeout, chromedp.Navigate(f.URL+"/sagas/v2")); err != nil {
		t.Fatal(err)
	}
	if err := tab.Poll(pollTimeout, `(() => { const v = document.querySelector('[data-view="balance"]'); return !!v && v.textContent.includes('Balance of 1') && v.textContent.includes('100000') && v.textContent.includes('<img src=x') && window.__xss === undefined })()`); err != nil {
		t.Fatal(err)
	}
}
