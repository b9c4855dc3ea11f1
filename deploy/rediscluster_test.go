package deploy_test

import (
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ksaga/ksaga/internal/manifest"
	"github.com/ksaga/ksaga/internal/testredis"
	"github.com/ksaga/ksaga/ordersaga"
	"github.com/ksaga/ksaga/redisstore"
)

// TestRedisCluster: REDIS=cluster (deploy/components/redis-cluster)
// replaces the single Redis with six cluster-enabled nodes that load the
// same ACL file and persist on their own volumes, created by a Job, and
// every function connects as its own user in the cluster form of
// REDIS_URL, seeded with the set's own pods. The rendered deployment
// validates as ksaga validate does.
func TestRedisCluster(t *testing.T) {
	file, real := render(t, "choreography", "mt-channel", "REDIS=cluster", "DEMO=1")
	if !real {
		t.Skipf("REDIS=cluster needs kustomize: %v", kubectl())
	}
	set := loadClean(t, file)
	for _, gone := range [][2]string{{"StatefulSet", "redis"}, {"Service", "redis"}, {"Service", "redis-headless"}} {
		group := ""
		if gone[0] == "StatefulSet" {
			group = "apps"
		}
		if set.Find(group, gone[0], "saga", gone[1]) != nil {
			t.Errorf("%s saga/%s is still deployed", gone[0], gone[1])
		}
	}
	o := set.Find("apps", "StatefulSet", "saga", "redis-cluster")
	if o == nil {
		t.Fatal("no StatefulSet saga/redis-cluster")
	}
	sts := o.Value.(*appsv1.StatefulSet)
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 6 || sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("redis-cluster: %v replicas, %s: want 6 started in parallel (3 masters, a replica each)", sts.Spec.Replicas, sts.Spec.PodManagementPolicy)
	}
	c := sts.Spec.Template.Spec.Containers[0]
	args := " " + strings.Join(c.Args, " ") + " "
	for _, want := range []string{" --cluster-enabled yes ", " --cluster-config-file /data/nodes.conf ", " --appendonly yes ",
		" --aclfile /etc/redis/acl/users.acl ", " --masterauth $(REDIS_PASSWORD) ", " --cluster-preferred-endpoint-type hostname "} {
		if !strings.Contains(args, want) {
			t.Errorf("redis-cluster args %q lack %q", c.Args, strings.TrimSpace(want))
		}
	}
	aclFromSecret := slices.ContainsFunc(sts.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Secret != nil && v.Secret.SecretName == "ksaga-redis-acl"
	})
	if !aclFromSecret || len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Error("every node must mount the ksaga-redis-acl Secret and have its own volume")
	}
	svc := set.Find("", "Service", "saga", sts.Spec.ServiceName)
	if svc == nil || svc.Value.(*corev1.Service).Spec.ClusterIP != corev1.ClusterIPNone || !svc.Value.(*corev1.Service).Spec.PublishNotReadyAddresses {
		t.Fatalf("serviceName %q is not a headless Service publishing not-ready pods", sts.Spec.ServiceName)
	}
	for k, v := range svc.Value.(*corev1.Service).Spec.Selector {
		if sts.Spec.Template.Labels[k] != v {
			t.Errorf("Service %s selects %s=%s, which the pods lack", sts.Spec.ServiceName, k, v)
		}
	}
	if !strings.Contains(jobScript(t, set, "redis-cluster-create"), "redis-cli --cluster create") {
		t.Error("no Job saga/redis-cluster-create running redis-cli --cluster create")
	}

	// every function: its own user, its ACL password, the set's pods as seeds
	pods := map[string]bool{}
	for i := range *sts.Spec.Replicas {
		pods[fmt.Sprintf("%s-%d.%s.saga.svc.cluster.local:6379", sts.Name, i, sts.Spec.ServiceName)] = true
	}
	_, _, passwords := aclFile(t)
	users := set.Secret("saga", "ksaga-redis-users")
	if users == nil || len(users.Data) == 0 {
		t.Fatal("no Secret saga/ksaga-redis-users")
	}
	for name, raw := range users.Data {
		rdb, err := redisstore.NewClient(string(raw))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		cc, ok := rdb.(*redis.ClusterClient)
		if !ok {
			t.Errorf("%s: REDIS_URL %q is not in the cluster form", name, raw)
			continue
		}
		opt := cc.Options()
		if opt.Username != name || opt.Password != passwords[name] {
			t.Errorf("%s: connects as %q with another password than users.acl's", name, opt.Username)
		}
		for _, a := range opt.Addrs {
			if !pods[a] {
				t.Errorf("%s: seed %s is not a pod of %s", name, a, sts.Name)
			}
		}
		_ = cc.Close()
	}
	admin, err := url.Parse(string(set.Secret("saga", "ksaga-redis").Data["REDIS_URL"]))
	if err != nil || !pods[admin.Host] {
		t.Errorf("the admin REDIS_URL %v is not a node of the cluster", admin)
	}
	if !strings.Contains(jobScript(t, set, "ksaga-seed-demo-data"), "redis-cli -c ") {
		t.Error("the demo data Job must follow the cluster's redirects (redis-cli -c)")
	}
}

// TestSeedOnCluster: the demo data Job's commands, piped into redis-cli -c
// as the Job does, reach every node of a real Redis Cluster: each key in
// its slot.
func TestSeedOnCluster(t *testing.T) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("redis-cli not installed")
	}
	c := testredis.StartCluster(t, 3, 0)
	cmd := exec.Command("redis-cli", "-c", "-u", "redis://"+c.Nodes[0].Addr()+"/0", "--no-auth-warning")
	cmd.Stdin = strings.NewReader(seedCommands(t))
	if out, err := cmd.CombinedOutput(); err != nil || strings.Contains(string(out), "MOVED") || strings.Contains(string(out), "ERR") {
		t.Fatalf("redis-cli -c: %v\n%s", err, out)
	}
	rdb := c.Client(t)
	ctx := context.Background()
	for _, u := range ordersaga.Fixture.Users {
		if n, err := rdb.Get(ctx, ordersaga.BalanceKey(u.ID)).Int64(); err != nil || n != u.BalanceCents {
			t.Errorf("balance of %s: %d %v", u.Username, n, err)
		}
	}
	for _, p := range ordersaga.Fixture.Products {
		if n, err := rdb.Get(ctx, ordersaga.StockKey(p.SKU)).Int64(); err != nil || n != p.Stock {
			t.Errorf("stock of %s: %d %v", p.SKU, n, err)
		}
	}
}

// jobScript is the args of the Job saga/name's container ("" if there is
// no such Job: ksaga dev loads Jobs without running them).
func jobScript(t *testing.T, set *manifest.Set, name string) string {
	t.Helper()
	for _, o := range set.Skipped {
		u, ok := o.Value.(*unstructured.Unstructured)
		if !ok || u.GetKind() != "Job" || u.GetNamespace() != "saga" || u.GetName() != name {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
		if len(containers) != 1 {
			t.Fatalf("Job %s: %d containers", name, len(containers))
		}
		args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
		return strings.Join(args, "\n")
	}
	return ""
}

// seedCommands is the demo data Job's <<'COMMANDS' block.
func seedCommands(t *testing.T) string {
	t.Helper()
	set, ps := load(t, "deploy/demo/seed-job.yaml")
	if len(ps) > 0 || len(set.Skipped) != 1 {
		t.Fatalf("deploy/demo/seed-job.yaml: %v", ps)
	}
	job := set.Skipped[0].Value.(*unstructured.Unstructured)
	containers, _, _ := unstructured.NestedSlice(job.Object, "spec", "template", "spec", "containers")
	args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	_, body, ok := strings.Cut(strings.Join(args, "\n"), "<<'COMMANDS'\n")
	body, _, ok2 := strings.Cut(body, "\nCOMMANDS\n")
	if !ok || !ok2 {
		t.Fatal("the seed Job has no <<'COMMANDS' ... COMMANDS block")
	}
	return body + "\n"
}
