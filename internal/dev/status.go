package dev

import (
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// runtimeInfo is what the index page and GET /.ksaga/services show.
type runtimeInfo struct {
	mode, brokerClass, redis, scale string
	brokers                         []brokerInfo
	functions                       []*function
}

type brokerInfo struct {
	nn       types.NamespacedName
	url      string
	class    string
	triggers int
}

// servicesDoc is the body of GET /.ksaga/services (README, "ksaga dev").
type servicesDoc struct {
	// Scale is "knative" (Knative's autoscaling) or "always-on".
	Scale    string       `json:"scale"`
	Services []serviceDoc `json:"services"`
}

type serviceDoc struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	URL       string `json:"url"`
	Protocol  string `json:"protocol"` // http or h2c
	Import    string `json:"import"`
	// Desired is the replicas asked for, Ready those taking requests.
	Desired int `json:"desired"`
	Ready   int `json:"ready"`
	// Condition is the PodAutoscaler's: active, activating or inactive
	// (empty with --scale=always-on).
	Condition   string          `json:"condition,omitempty"`
	Activations int64           `json:"activations"`
	LastEvent   string          `json:"last_event,omitempty"`
	Requests    requestsDoc     `json:"requests"`
	Autoscaling *autoscalingDoc `json:"autoscaling,omitempty"`
	Replicas    []replicaDoc    `json:"replicas"`
}

type requestsDoc struct {
	Active      int     `json:"active"` // in flight or held
	Held        int     `json:"held"`   // waiting for a replica
	Served      int64   `json:"served_total"`
	HeldTotal   int64   `json:"held_total"`
	IdleSeconds float64 `json:"idle_seconds"` // since the last request ended (0 while active)
}

type autoscalingDoc struct {
	Class                string  `json:"class"`
	Metric               string  `json:"metric"`
	Target               float64 `json:"target"` // per replica, after target-utilization
	ContainerConcurrency int     `json:"container_concurrency"`
	MinScale             int32   `json:"min_scale"`
	MaxScale             int32   `json:"max_scale"` // 0: unbounded
	InitialScale         int32   `json:"initial_scale"`
	StableWindowS        float64 `json:"stable_window_seconds"`
	PanicWindowS         float64 `json:"panic_window_seconds"`
	RetentionS           float64 `json:"scale_to_zero_pod_retention_seconds"`
	ScaleDownDelayS      float64 `json:"scale_down_delay_seconds"`
	TimeoutS             float64 `json:"timeout_seconds"`
}

type replicaDoc struct {
	replicaStatus
	InFlight int `json:"in_flight"`
}

// servicesStatus builds the JSON document.
func servicesStatus(info *runtimeInfo) servicesDoc {
	doc := servicesDoc{Scale: info.scale, Services: []serviceDoc{}}
	fs := slices.Clone(info.functions)
	slices.SortFunc(fs, func(a, b *function) int { return strings.Compare(a.nn.String(), b.nn.String()) })
	for _, f := range fs {
		doc.Services = append(doc.Services, serviceStatus(f))
	}
	return doc
}

func serviceStatus(f *function) serviceDoc {
	d := serviceDoc{Namespace: f.nn.Namespace, Name: f.nn.Name, URL: f.url.String(), Protocol: "http", Import: f.importPath}
	if f.h2c {
		d.Protocol = "h2c"
	}
	ps := f.pool.Status()
	d.Ready = ps.Ready
	d.Requests = requestsDoc{Active: ps.Active, Held: ps.Held, Served: ps.Served, HeldTotal: ps.HeldEver, IdleSeconds: roundTo(ps.IdleFor.Seconds(), 1)}
	if f.scaler != nil {
		st := f.scaler.Status()
		d.Desired, d.Condition, d.Activations, d.LastEvent = int(st.Desired), st.Condition, st.Activations, st.LastEvent
	} else {
		d.Desired = 1
	}
	if s := f.settings; s != nil && !f.alwaysOn {
		d.Autoscaling = &autoscalingDoc{
			Class: s.PA.Class(), Metric: s.MetricName(), Target: roundTo(s.Target(), 3), ContainerConcurrency: s.ContainerConcurrency,
			MinScale: s.Min, MaxScale: s.Max, InitialScale: s.Initial,
			StableWindowS: s.Metric.Spec.StableWindow.Seconds(), PanicWindowS: s.Metric.Spec.PanicWindow.Seconds(),
			RetentionS: s.Retention.Seconds(), ScaleDownDelayS: s.Decider.Spec.ScaleDownDelay.Seconds(), TimeoutS: s.Timeout.Seconds(),
		}
	}
	reps, _ := f.status()
	d.Replicas = make([]replicaDoc, 0, len(reps))
	for _, r := range reps {
		d.Replicas = append(d.Replicas, replicaDoc{replicaStatus: r,
			InFlight: ps.InFlight[net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port))]})
	}
	return d
}

// writeIndex writes the text index of GET /.
func writeIndex(w io.Writer, info *runtimeInfo) {
	var b strings.Builder
	fmt.Fprintf(&b, "ksaga dev\n\nmode:    %s\nbroker:  %s\nredis:   %s\nscale:   %s\n", info.mode, info.brokerClass, info.redis, info.scale)
	b.WriteString("\nbrokers (POST CloudEvents here):\n")
	for _, br := range info.brokers {
		fmt.Fprintf(&b, "  %-28s %s  (class %s, %d triggers)\n", br.nn, br.url, br.class, br.triggers)
	}
	b.WriteString("\nservices (replicas ready/desired; JSON at " + ServicesPath + "):\n")
	for _, d := range servicesStatus(info).Services {
		fmt.Fprintf(&b, "  %-28s %-40s %-4s replicas %d/%d", d.Namespace+"/"+d.Name, d.URL, d.Protocol, d.Ready, d.Desired)
		if a := d.Autoscaling; a != nil {
			max := "∞"
			if a.MaxScale > 0 {
				max = strconv.Itoa(int(a.MaxScale))
			}
			fmt.Fprintf(&b, " (scale %d-%s, %s), %s", a.MinScale, max, d.Condition, plural(d.Requests.Active, "request"))
		}
		b.WriteByte('\n')
		for _, r := range d.Replicas {
			fmt.Fprintf(&b, "      replica %d: pid %d, port %d, %s, restarts %d, in flight %d\n", r.ID, r.PID, r.Port, r.State, r.Restarts, r.InFlight)
		}
	}
	_, _ = io.WriteString(w, b.String())
}
