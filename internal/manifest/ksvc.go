package manifest

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// DefaultPort is the container port Knative Serving uses when a container
// declares none.
const DefaultPort = 8080

// koPrefix marks an image that ko builds from a Go import path.
const koPrefix = "ko://"

// ServingContainer returns the container of a Knative Service that receives
// requests: the one that declares a port, or else the first. It returns nil
// if the Service has no container.
func ServingContainer(svc *servingv1.Service) *corev1.Container {
	cs := svc.Spec.Template.Spec.Containers
	for i := range cs {
		if len(cs[i].Ports) > 0 {
			return &cs[i]
		}
	}
	if len(cs) > 0 {
		return &cs[0]
	}
	return nil
}

// Image returns the image of the serving container, or "".
func Image(svc *servingv1.Service) string {
	if c := ServingContainer(svc); c != nil {
		return c.Image
	}
	return ""
}

// ContainerPort returns the port the serving container listens on
// (DefaultPort when none is declared) and whether it speaks HTTP/2 cleartext
// (the port is named "h2c", as with `kn service create --port h2c:8080`).
func ContainerPort(svc *servingv1.Service) (port int32, h2c bool) {
	c := ServingContainer(svc)
	if c == nil || len(c.Ports) == 0 {
		return DefaultPort, false
	}
	p := c.Ports[0]
	port = p.ContainerPort
	if port == 0 {
		port = DefaultPort
	}
	return port, p.Name == "h2c"
}

// TemplateAnnotations returns the annotations of the revision template
// (spec.template.metadata.annotations), where the autoscaling.knative.dev/*
// settings live. The map is the Service's own; do not modify it.
func TemplateAnnotations(svc *servingv1.Service) map[string]string {
	return svc.Spec.Template.Annotations
}

// KoImportPath returns the Go import path of a "ko://<import path>" image
// and true, or "" and false if image is not of that form.
func KoImportPath(image string) (string, bool) {
	path, ok := strings.CutPrefix(image, koPrefix)
	if !ok || path == "" || strings.HasPrefix(path, "/") || strings.HasSuffix(path, "/") {
		return "", false
	}
	for _, r := range path {
		// An import path has no blanks, and ko:// images take no tag or digest.
		if r <= ' ' || r == 0x7f || strings.ContainsRune(`:@\"'`+"`", r) {
			return "", false
		}
	}
	for _, elem := range strings.Split(path, "/") {
		if elem == "" || elem == "." || elem == ".." {
			return "", false
		}
	}
	return path, true
}
