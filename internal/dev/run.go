package dev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ksaga/ksaga/internal/devbroker"
	"github.com/ksaga/ksaga/internal/devoidc"
	"github.com/ksaga/ksaga/internal/devscale"
	"github.com/ksaga/ksaga/internal/manifest"
	"github.com/ksaga/ksaga/redisstore"
	"github.com/ksaga/ksaga/telemetry"
)

// devRuntime holds what Run started, so that shutdown stops exactly that.
type devRuntime struct {
	cfg Config
	log *slog.Logger

	closeRedis func()
	oidc       *senderIdentity // nil without Config.OIDC

	ln           net.Listener // the ingress's, closed by srv once it serves
	spawn        *spawner
	stopFuncs    context.CancelFunc
	funcsDone    sync.WaitGroup
	srv          *http.Server
	in           *ingress
	serveDone    chan error
	stopBroker   context.CancelFunc
	brokerDone   chan error
	stopScalers  context.CancelFunc
	scalersDone  sync.WaitGroup
	shutdownOnce sync.Once
	pinger       *pinger
}

// Run is `ksaga dev`: it loads the manifests, starts Redis (or connects to
// it), builds and starts every function, serves the ingress and runs the
// Brokers until ctx is done, then shuts everything down and returns nil. It
// returns an error if start-up fails (after stopping what it had started)
// or the Broker's data plane fails.
func Run(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	rt := &devRuntime{cfg: cfg, log: cfg.Logger}
	defer rt.shutdown()
	err := rt.run(ctx)
	if err != nil && ctx.Err() != nil {
		rt.log.Info("interrupted during start-up", "error", err)
		return nil
	}
	return err
}

func (rt *devRuntime) run(ctx context.Context) error {
	cfg, log := rt.cfg, rt.log
	began := time.Now()

	// 1. Manifests.
	paths := cfg.Paths
	source := "-f " + strings.Join(paths, " -f ")
	if len(paths) == 0 {
		var err error
		if paths, err = DefaultPaths(cfg.Dir, cfg.BrokerClass, cfg.Mode); err != nil {
			return err
		}
		if p := filepath.Join(cfg.Dir, PoliciesDir); cfg.OIDC && isDir(p) {
			paths = append(paths, p)
		}
		source = strings.Join(paths, ", ")
	}
	ld, err := load(paths, false, cfg.OIDC) // unemitted types are `ksaga validate`'s concern
	if err != nil {
		return err
	}
	for _, s := range ld.skipped {
		log.Info(s)
	}
	if err := ld.problems.Err(); err != nil {
		return fmt.Errorf("invalid manifests (%s): %w", source, err)
	}
	set := ld.set
	log.Info("manifests loaded", "from", source, "objects", counts(set), "warnings", len(ld.problems.Warnings()))
	for _, p := range ld.problems.Warnings() {
		log.Debug("manifest warning", "problem", p.String())
	}
	if len(set.Brokers()) == 0 {
		return fmt.Errorf("no Broker in %s", source)
	}
	imports, err := runnable(set)
	if err != nil {
		return err
	}
	mode := cfg.Mode
	if len(cfg.Paths) > 0 {
		mode = "custom (-f)"
	}
	class := classes(set)
	log.Info("ksaga dev", "mode", mode, "broker_class", class,
		"note", "every broker class runs on the local data plane: a Redis stream per Broker, 202 once stored, Knative's filters and dispatcher")

	// 2. The ingress port: bound first, so that --port 0 works and the
	// functions can reach the ingress as soon as they start.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("ingress: %w", err)
	}
	rt.ln = ln
	port := ln.Addr().(*net.TCPAddr).Port
	addrs := addressesOf(set, port)
	if cfg.OIDC {
		if rt.oidc, err = newSenderIdentity(set, port, log); err != nil {
			return err
		}
		for _, p := range senderIdentityProblems(set) {
			log.Warn("sender identity", "problem", p.String())
		}
		log.Info("sender identity on (--oidc): functions verify tokens, the broker ingress enforces the EventPolicies",
			"issuer", rt.oidc.issuer.URL(), "event_policies", len(set.EventPolicies()),
			"outside_producer", devoidc.ProducerServiceAccount+" (a request without a token)")
	} else {
		log.Info("sender identity off (--oidc=false): no tokens, no EventPolicies, as a cluster without authentication-oidc")
	}

	// 3. Redis.
	redisURL, rdb, redisDesc, err := rt.openRedis(ctx)
	if err != nil {
		return err
	}
	var redisURLs map[string]string // per function, with --redis-acl
	switch {
	case cfg.RedisACL && cfg.RedisURL != "":
		var keep func(context.Context)
		if redisURLs, keep, err = applyRedisACL(ctx, rdb, set, redisURL, cfg.FaultInjection, log); err != nil {
			return err
		}
		kctx, stopKeep := context.WithCancel(context.WithoutCancel(ctx))
		keepDone := make(chan struct{})
		go func() { defer close(keepDone); keep(kctx) }()
		defer func() { stopKeep(); <-keepDone }()
		log.Info("redis: every function connects as its own ACL user (--redis-acl), allowed only its ksaga.io/redis-keys and the saga store's keys", "users", len(redisURLs))
	case cfg.RedisACL:
		log.Info("redis: no per-function ACL users on the embedded miniredis (it has no ACL); use --redis-url for them")
	}
	if cfg.Seed != "" {
		n, err := seed(ctx, rdb, cfg.Seed)
		if err != nil {
			return fmt.Errorf("--seed %s: %w", cfg.Seed, err)
		}
		log.Info("seeded", "file", cfg.Seed, "commands", n)
	}

	// 4. Build.
	binDir := cfg.BinDir
	if binDir == "" {
		if binDir, err = defaultBinDir(cfg.Dir); err != nil {
			return err
		}
	}
	t0 := time.Now()
	bins, err := build(ctx, log, cfg.Dir, binDir, slices.Collect(maps.Values(imports)))
	if err != nil {
		return err
	}
	log.Info("built functions", "count", len(bins), "took", time.Since(t0).Round(time.Millisecond), "dir", binDir)

	// 5. Functions: ports, environment, autoscaling. GET /metrics on the
	// ingress: the broker's counters, the services' replicas, the fleet's
	// in-flight and overdue sagas (read from the dev Redis) and Go's own.
	metrics := telemetry.NewMetrics()
	store, err := redisstore.New(rdb, redisstore.Options{})
	if err != nil {
		return err
	}
	metrics.Registry.MustRegister(telemetry.NewSagaCollector(store, store.Definitions, log))
	fs, err := rt.functions(set, addrs, imports, bins, redisURL, redisURLs, devscale.NewMetrics(metrics.Registry))
	if err != nil {
		return err
	}

	// 6. The Broker: it delivers straight to a replica chosen by the
	// service's Pool, which may hold a delivery while a replica starts.
	byName := make(map[types.NamespacedName]*function, len(fs))
	for _, f := range fs {
		byName[f.nn] = f
	}
	dl := &dialer{}
	if cfg.InstallDialer != nil {
		cfg.InstallDialer(dl.DialContext)
	}
	endpoint := func(ctx context.Context, u *url.URL) (devbroker.Endpoint, error) {
		nn, ok := serviceHost(u.Host)
		if !ok || u.Port() != strconv.Itoa(port) || byName[nn] == nil {
			return devbroker.Endpoint{}, nil // not a service of this ksaga dev
		}
		lease, err := byName[nn].pool.Acquire(ctx)
		if err != nil {
			return devbroker.Endpoint{}, fmt.Errorf("ksaga dev: service %s: %w", nn, err)
		}
		return devbroker.Endpoint{Addr: lease.Addr(), Release: lease.Release}, nil
	}
	// The broker traces its deliveries when OTEL_* (passed on to the
	// functions too) names an endpoint: its spans join each saga's trace.
	passed := map[string]string{}
	for _, kv := range cfg.PassEnv {
		if k, v, ok := strings.Cut(kv, "="); ok {
			passed[k] = v
		}
	}
	tracing := telemetry.NewTracing(ctx, "ksaga-dev", func(k string) string { return passed[k] }, log)
	defer func() { _ = tracing.Shutdown(context.WithoutCancel(ctx)) }()
	bcfg := devbroker.Config{
		Redis: rdb, Brokers: set.Brokers(), Triggers: set.Triggers(),
		Resolve: addrs.Resolver(), IngressURL: addrs.BrokerURL,
		Logger: log, Consumer: devbroker.DefaultConsumer, DrainTimeout: cfg.DrainTimeout, // a stable name: pending entries survive restarts
		DuplicateDeliveries: cfg.DuplicateDeliveries,
		Observer:            newBrokerMetrics(metrics.Registry),
		Endpoint:            endpoint,
	}
	if tracing.Enabled {
		bcfg.TracerProvider = tracing.Provider
	}
	if rt.oidc != nil {
		bcfg.Auth = devoidc.NewBrokerAuth(rt.oidc.issuer, rt.oidc.policies, set.Brokers())
	}
	br, err := devbroker.New(bcfg)
	if cfg.DuplicateDeliveries > 0 {
		log.Warn("duplicate deliveries: the broker delivers events twice (--duplicate-deliveries)", "rate", cfg.DuplicateDeliveries)
	}
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	info := &runtimeInfo{mode: mode, brokerClass: class, redis: redisDesc, scale: string(cfg.Scale), functions: fs}
	for _, b := range set.Brokers() {
		nn := types.NamespacedName{Namespace: b.Namespace, Name: b.Name}
		n := 0
		for _, t := range set.Triggers() {
			if t.Namespace == b.Namespace && t.Spec.Broker == b.Name {
				n++
			}
		}
		info.brokers = append(info.brokers, brokerInfo{nn: nn, url: addrs.BrokerURL(nn.Namespace, nn.Name).String(), class: brokerClass(b), triggers: n})
		log.Info("broker", "broker", nn.String(), "class", brokerClass(b), "url", addrs.BrokerURL(nn.Namespace, nn.Name).String(), "triggers", n)
	}

	// 7. The ingress.
	in := newIngress(log, fs, br, func(w io.Writer) { writeIndex(w, info) })
	in.metrics = metrics.Handler()
	if rt.oidc != nil {
		in.oidc = rt.oidc.issuer.Handler()
	}
	in.status = func() any { return servicesStatus(info) }
	rt.in = in
	// No write timeout: responses may stream (gRPC, server-sent events).
	rt.srv = &http.Server{Handler: in, ReadHeaderTimeout: ReadHeaderTimeout, IdleTimeout: IdleTimeout}
	rt.srv.Protocols = new(http.Protocols)
	rt.srv.Protocols.SetHTTP1(true)
	rt.srv.Protocols.SetUnencryptedHTTP2(true)
	rt.serveDone = make(chan error, 1)
	go func() { rt.serveDone <- rt.srv.Serve(ln) }()
	log.Info("ingress listening", "addr", ln.Addr().String(), "index", "http://localhost:"+strconv.Itoa(port)+"/")

	// 8. Start the functions (each with its initial scale, then under its
	// autoscaler) and wait until they are ready.
	rt.spawn = newSpawner()
	width := 0
	for _, f := range fs {
		width = max(width, len(f.nn.Name)+3) // "#2" for a second replica
	}
	sup := &supervisor{log: log, dir: cfg.Dir, stdout: cfg.Stdout, stderr: cfg.Stderr, width: width,
		backoff: cfg.Backoff, shutdownTimeout: cfg.ShutdownTimeout, spawn: rt.spawn}
	fctx, stopFuncs := context.WithCancel(context.WithoutCancel(ctx))
	rt.stopFuncs = stopFuncs
	if rt.oidc != nil {
		rt.funcsDone.Go(func() { rt.oidc.run(fctx) })
	}
	sctx, stopScalers := context.WithCancel(fctx)
	rt.stopScalers = stopScalers
	for _, f := range fs {
		f.attach(fctx, sup, &rt.funcsDone)
		args := []any{"service", f.nn.String(), "url", f.url.String(), "h2c", f.h2c, "import", f.importPath}
		if s := f.settings; f.scaler != nil {
			args = append(args, "metric", s.MetricName(), "target", roundTo(s.Target(), 3), "container_concurrency", s.ContainerConcurrency,
				"min_scale", s.Min, "max_scale", s.Max, "initial_scale", s.Initial, "stable_window", s.Metric.Spec.StableWindow,
				"retention", s.Retention)
		}
		log.Info("service", args...)
		if f.scaler != nil {
			rt.scalersDone.Go(func() { f.scaler.Run(sctx) })
		} else {
			f.Scale(1)
		}
	}
	if err := waitReady(ctx, fs, cfg.ReadyTimeout); err != nil {
		if ctx.Err() != nil {
			return nil // interrupted during start-up
		}
		return err
	}

	// 9. Deliver.
	bctx, stopBroker := context.WithCancel(context.WithoutCancel(ctx))
	rt.stopBroker = stopBroker
	rt.brokerDone = make(chan error, 1)
	go func() { rt.brokerDone <- br.Run(bctx) }()
	// PingSources, once everything can take their events (each also fires
	// on POST /.ksaga/pingsources/<ns>/<name>).
	var token tokenFunc
	if rt.oidc != nil {
		token = func(sub, aud string) (string, error) {
			tok, _, err := rt.oidc.issuer.Token(sub, aud)
			return tok, err
		}
	}
	p, err := newPinger(bctx, set.PingSources(), addrs.Resolver(), token, log)
	if err != nil {
		return err
	}
	p.start()
	rt.pinger = p
	in.pings.Store(p)
	in.ready.Store(true)
	log.Info("ready", "took", time.Since(began).Round(time.Millisecond), "index", "http://localhost:"+strconv.Itoa(port)+"/")
	rt.banner(set, addrs, info)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
		return nil
	case err := <-rt.brokerDone:
		rt.brokerDone = nil
		if err == nil {
			err = errors.New("stopped unexpectedly")
		}
		return fmt.Errorf("broker: %w", err)
	case err := <-rt.serveDone:
		rt.serveDone = nil
		return fmt.Errorf("ingress: %w", err) // Serve never returns nil
	}
}

// shutdown stops what run started, in this order: the broker ingress stops
// accepting events (503, which senders retry); the Broker stops reading and
// drains its in-flight deliveries, while the functions and their routes on
// the ingress still run (and still scale: a delivery to a service at zero
// starts it), so that a delivery and the calls it makes can finish; the
// ingress server stops; the autoscalers stop; every replica gets SIGTERM
// (SIGKILL after ShutdownTimeout) and is reaped; Redis is closed. Whatever was
// accepted but not delivered stays in Redis for the next start.
func (rt *devRuntime) shutdown() {
	rt.shutdownOnce.Do(func() {
		if rt.pinger != nil {
			rt.pinger.stop()
		}
		if rt.in != nil {
			rt.in.draining.Store(true)
		}
		if rt.stopBroker != nil {
			rt.stopBroker()
			if rt.brokerDone != nil {
				if err := <-rt.brokerDone; err != nil {
					rt.log.Error("broker", "error", err)
				}
			}
		}
		if rt.srv == nil && rt.ln != nil {
			_ = rt.ln.Close()
		}
		if rt.srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := rt.srv.Shutdown(ctx); err != nil {
				_ = rt.srv.Close()
			}
			cancel()
			if rt.serveDone != nil {
				if err := <-rt.serveDone; err != nil && !errors.Is(err, http.ErrServerClosed) {
					rt.log.Error("ingress", "error", err)
				}
			}
		}
		if rt.stopScalers != nil {
			rt.stopScalers()
			rt.scalersDone.Wait()
		}
		if rt.stopFuncs != nil {
			rt.stopFuncs()
			rt.funcsDone.Wait()
		}
		if rt.spawn != nil {
			rt.spawn.close()
		}
		if rt.closeRedis != nil {
			rt.closeRedis()
		}
		if rt.oidc != nil {
			rt.oidc.close()
		}
		if rt.srv != nil {
			rt.log.Info("stopped")
		}
	})
}

// openRedis connects to cfg.RedisURL, or starts an embedded miniredis. It
// returns the URL the functions get, a client, and a description for logs.
func (rt *devRuntime) openRedis(ctx context.Context) (string, redis.UniversalClient, string, error) {
	cfg, log := rt.cfg, rt.log
	if cfg.RedisURL != "" {
		rdb, err := redisstore.NewClient(cfg.RedisURL)
		if err != nil {
			return "", nil, "", fmt.Errorf("--redis-url: %w", err)
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := rdb.Ping(pctx).Err(); err != nil {
			_ = rdb.Close()
			return "", nil, "", fmt.Errorf("redis %s: %w", redact(cfg.RedisURL), err)
		}
		rt.closeRedis = func() { _ = rdb.Close() }
		log.Info("redis", "url", redact(cfg.RedisURL))
		return cfg.RedisURL, rdb, redact(cfg.RedisURL), nil
	}
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return "", nil, "", fmt.Errorf("embedded redis: %w", err)
	}
	u := "redis://" + m.Addr() + "/0"
	rdb, err := redisstore.NewClient(u)
	if err != nil {
		m.Close()
		return "", nil, "", err
	}
	rt.closeRedis = func() { _ = rdb.Close(); m.Close() }
	log.Warn("redis: embedded (miniredis in this process): not durable, everything is lost when ksaga dev stops; use --redis-url for a real server", "url", u)
	return u, rdb, "embedded miniredis at " + u + " (not durable)", nil
}

// runnable returns the import path of each Knative Service's serving
// container, or an error naming every Service whose image is not
// ko://<import path>.
func runnable(set *manifest.Set) (map[types.NamespacedName]string, error) {
	out := make(map[types.NamespacedName]string)
	var errs []error
	for _, svc := range set.Services() {
		nn := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
		img := manifest.Image(svc)
		p, ok := manifest.KoImportPath(img)
		if !ok {
			errs = append(errs, fmt.Errorf("service %s: image %q is not ko://<import path>: ksaga dev builds and runs only Go main packages named by ko:// images", nn, img))
			continue
		}
		if n := len(svc.Spec.Template.Spec.Containers); n > 1 {
			errs = append(errs, fmt.Errorf("service %s: %d containers: ksaga dev runs only single-container Services", nn, n))
			continue
		}
		out[nn] = p
	}
	return out, errors.Join(errs...)
}

// functions prepares one function per Knative Service: a free port for its
// first replica, its environment, its autoscaling settings (the Service's
// annotations and the manifests' config-autoscaler, through Knative's
// code) and its Pool.
func (rt *devRuntime) functions(set *manifest.Set, addrs *Addresses, imports map[types.NamespacedName]string,
	bins map[string]string, redisURL string, redisURLs map[string]string, sm *devscale.Metrics) ([]*function, error) {
	ascfg, err := devscale.ParseConfig(set.ConfigMap(devscale.ConfigNamespace, devscale.ConfigName))
	if err != nil {
		return nil, err
	}
	if set.ConfigMap(devscale.ConfigNamespace, devscale.ConfigName) != nil {
		rt.log.Info("autoscaling: config-autoscaler from the manifests", "namespace", devscale.ConfigNamespace)
	}
	if rt.cfg.ScaleWindow > 0 {
		rt.log.Warn("autoscaling: every stable window is shortened (--scale-window); retention, scale-down delay and grace period are capped by it", "window", rt.cfg.ScaleWindow)
	}
	svcs := set.Services()
	ports, err := freePorts(len(svcs))
	if err != nil {
		return nil, err
	}
	fs := make([]*function, 0, len(svcs))
	for i, svc := range svcs {
		nn := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
		_, h2c := manifest.ContainerPort(svc)
		var oidcEnv []string
		if rt.oidc != nil {
			if oidcEnv, err = rt.oidc.env(set, svc); err != nil {
				return nil, fmt.Errorf("service %s: %w", nn, err)
			}
		}
		fnRedis := redisURL
		if u, ok := redisURLs[svc.Name]; ok {
			fnRedis = u // its own ACL user
		}
		env, err := buildEnv(envInput{
			Set: set, Service: svc, Port: ports[i], Addrs: addrs, RedisURL: fnRedis,
			FaultInjection: rt.cfg.FaultInjection, OIDC: oidcEnv, PassEnv: rt.cfg.PassEnv, Extra: rt.cfg.Env,
		})
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", nn, err)
		}
		for _, r := range env.Rewrites {
			rt.log.Debug("env rewritten to a dev URL", "service", nn.String(), "name", r.Name, "from", redact(r.From), "to", redact(r.To))
		}
		if len(env.SinkBindings) > 1 {
			rt.log.Warn("several SinkBindings have this Service as subject; the last one's K_SINK wins", "service", nn.String(), "sinkbindings", strings.Join(env.SinkBindings, ", "))
		}
		settings, err := devscale.NewSettings(svc, ascfg, devscale.Override{Window: rt.cfg.ScaleWindow})
		if err != nil {
			return nil, err
		}
		f := &function{
			nn: nn, importPath: imports[nn], binary: bins[imports[nn]], port: ports[i], h2c: h2c,
			env: env.Env, url: addrs.ServiceURL(nn.Namespace, nn.Name), settings: settings,
			alwaysOn: rt.cfg.Scale == ScaleAlwaysOn,
		}
		if f.alwaysOn {
			f.pool = devscale.NewPool(devscale.PoolConfig{HoldTimeout: settings.Timeout})
		} else {
			if !settings.KPA {
				rt.log.Warn("autoscaling: not the KPA class; ksaga dev keeps the initial replicas (it does not measure CPU)", "service", nn.String(), "class", settings.PA.Class())
			}
			f.scaler, f.pool = devscale.NewAutoscaler(devscale.AutoscalerConfig{Settings: settings, Target: f, Logger: rt.log,
				Metrics: sm, DecideInterval: decideInterval(rt.cfg.ScaleWindow)})
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// decideInterval is Knative's 2 s, or shorter for a window shortened below
// Knative's minimum of 6 s.
func decideInterval(window time.Duration) time.Duration {
	if window > 0 && window < 6*time.Second {
		return max(window/4, 100*time.Millisecond)
	}
	return devscale.DecideInterval
}

// freePorts returns n distinct free loopback ports (all are held open until
// every one is chosen, so none repeats).
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range lns {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// classes lists the broker classes of the set.
func classes(set *manifest.Set) string {
	var cs []string
	for _, b := range set.Brokers() {
		cs = append(cs, brokerClass(b))
	}
	slices.Sort(cs)
	return strings.Join(slices.Compact(cs), ", ")
}

// redact hides a URL's password.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable>"
	}
	return u.Redacted()
}

// banner prints how to reach everything and how to start a saga.
func (rt *devRuntime) banner(set *manifest.Set, addrs *Addresses, info *runtimeInfo) {
	w := rt.cfg.Console
	if w == nil {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nksaga dev is ready (mode %s, broker class %s, redis %s)\n", info.mode, info.brokerClass, info.redis)
	for _, br := range info.brokers {
		fmt.Fprintf(&b, "  broker %-22s %s\n", br.nn, br.url)
	}
	for _, f := range info.functions {
		fmt.Fprintf(&b, "  %-29s %s\n", f.nn, f.url)
	}
	fmt.Fprintf(&b, "  index                         http://localhost:%d/\n", addrs.Port())
	br := info.brokers[0]
	if c := set.Service(br.nn.Namespace, "console"); c != nil {
		fmt.Fprintf(&b, "\nConsole: %s/\n", addrs.ServiceURL(c.Namespace, c.Name))
	}
	data := `{"user_id":1,"items":[{"sku":"book","qty":1}]}`
	if api := set.Service(br.nn.Namespace, "order-api"); api != nil {
		au := addrs.ServiceURL(api.Namespace, api.Name)
		fmt.Fprintf(&b, "\nStart a saga through the order API (the answer has its order_id and saga_id):\n")
		fmt.Fprintf(&b, "  curl -i -X POST %s/orders -H 'content-type: application/json' -d '%s'\n", au, data)
		fmt.Fprintf(&b, "and follow the order:\n  curl %s/orders/<order_id>\n", au)
		fmt.Fprintf(&b, "or send the command to the broker as a binary-mode CloudEvent (a new ce-id per saga):\n")
		fmt.Fprintf(&b, "  curl -i -X POST %s -H 'ce-specversion: 1.0' -H 'ce-type: io.ksaga.order.create' -H 'ce-source: curl' -H 'ce-id: 1' -H 'ce-correlationid: saga-1' -H 'content-type: application/json' -d '%s'\n", br.url, data)
		if console := set.Service(br.nn.Namespace, "console"); console != nil {
			fmt.Fprintf(&b, "then follow the saga (the console's admin API):\n  curl %s/api/v1/sagas/saga-1\n", addrs.ServiceURL(console.Namespace, console.Name))
		}
		if rt.oidc != nil {
			fmt.Fprintf(&b, "(sender identity is on: a request without a token is the outside producer %s, which the EventPolicies let start sagas; --oidc=false turns it off)\n", devoidc.ProducerServiceAccount)
		}
	} else {
		fmt.Fprintf(&b, "\nSend a binary-mode CloudEvent to the broker:\n")
		fmt.Fprintf(&b, "  curl -i -X POST %s -H 'ce-specversion: 1.0' -H 'ce-type: com.example.hello' -H 'ce-source: curl' -H 'ce-id: 1' -H 'content-type: application/json' -d '{}'\n", br.url)
	}
	if srcs := set.PingSources(); len(srcs) > 0 {
		fmt.Fprintf(&b, "\nFire a PingSource now instead of waiting for its schedule (ksaga dev only):\n")
		for _, src := range srcs {
			fmt.Fprintf(&b, "  curl -i -X POST http://localhost:%d%s%s/%s\n", addrs.Port(), PingSourcesPath, src.Namespace, src.Name)
		}
	}
	b.WriteString("\nCtrl-C stops everything.\n\n")
	_, _ = io.WriteString(w, b.String())
}

// isDir reports whether p is a folder.
func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
