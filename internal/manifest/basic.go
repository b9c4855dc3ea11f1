package manifest

import (
	"fmt"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The checks in this file are the API server's basic ones, not a full
// re-implementation of Kubernetes validation: enough to catch the mistakes
// a hand-written manifest makes.

// checkMeta validates metadata as the API server does on create, with the
// name rule of the kind (a core Service name is a DNS-1035 label, a
// Namespace name a DNS-1123 label, everything else a DNS-1123 subdomain).
// kubectl apply also needs a name: generateName alone is not enough.
func checkMeta(v any, id ID, namespaced bool) field.ErrorList {
	m, ok := v.(metav1.Object)
	if !ok {
		return nil
	}
	nameFn := apivalidation.NameIsDNSSubdomain
	switch {
	case id.APIVersion == "v1" && id.Kind == "Service":
		nameFn = apivalidation.NameIsDNS1035Label
	case id.APIVersion == "v1" && id.Kind == "Namespace":
		nameFn = apivalidation.NameIsDNSLabel
	}
	errs := apivalidation.ValidateObjectMetaAccessor(m, namespaced, nameFn, field.NewPath("metadata"))
	if m.GetName() == "" && m.GetGenerateName() != "" {
		for _, e := range errs {
			if e.Field == "metadata.name" && e.Type == field.ErrorTypeRequired {
				e.Detail = "kubectl apply needs metadata.name (generateName works only with kubectl create)"
			}
		}
	}
	return errs
}

func checkConfigMap(v any) field.ErrorList {
	cm, ok := v.(*corev1.ConfigMap)
	if !ok {
		return nil
	}
	var errs field.ErrorList
	for k := range cm.Data {
		errs = append(errs, checkKey(field.NewPath("data").Key(k), k)...)
	}
	for k := range cm.BinaryData {
		errs = append(errs, checkKey(field.NewPath("binaryData").Key(k), k)...)
		if _, dup := cm.Data[k]; dup {
			errs = append(errs, field.Invalid(field.NewPath("binaryData").Key(k), k, "duplicate of key present in data"))
		}
	}
	return sorted(errs)
}

func checkSecret(v any) field.ErrorList {
	s, ok := v.(*corev1.Secret)
	if !ok {
		return nil
	}
	var errs field.ErrorList
	for k := range s.Data {
		errs = append(errs, checkKey(field.NewPath("data").Key(k), k)...)
	}
	for k := range s.StringData {
		errs = append(errs, checkKey(field.NewPath("stringData").Key(k), k)...)
	}
	return sorted(errs)
}

func checkKey(p *field.Path, k string) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsConfigMapKey(k) {
		errs = append(errs, field.Invalid(p, k, msg))
	}
	return errs
}

// sorted orders errors by field path, so that map iteration order does not
// leak into the output.
func sorted(errs field.ErrorList) field.ErrorList {
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Field < errs[j].Field })
	return errs
}

func checkCoreService(v any) field.ErrorList {
	s, ok := v.(*corev1.Service)
	if !ok {
		return nil
	}
	spec := field.NewPath("spec")
	var errs field.ErrorList
	switch s.Spec.Type {
	case "", corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
		if len(s.Spec.Ports) == 0 && s.Spec.ClusterIP != corev1.ClusterIPNone {
			errs = append(errs, field.Required(spec.Child("ports"), ""))
		}
	case corev1.ServiceTypeExternalName:
		if s.Spec.ExternalName == "" {
			errs = append(errs, field.Required(spec.Child("externalName"), ""))
		}
	default:
		errs = append(errs, field.NotSupported(spec.Child("type"), s.Spec.Type, []corev1.ServiceType{
			corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName}))
	}
	names := make(map[string]bool)
	for i, p := range s.Spec.Ports {
		pp := spec.Child("ports").Index(i)
		if len(s.Spec.Ports) > 1 && p.Name == "" {
			errs = append(errs, field.Required(pp.Child("name"), "names are required when there is more than one port"))
		}
		if p.Name != "" {
			if names[p.Name] {
				errs = append(errs, field.Duplicate(pp.Child("name"), p.Name))
			}
			names[p.Name] = true
		}
		for _, msg := range validation.IsValidPortNum(int(p.Port)) {
			errs = append(errs, field.Invalid(pp.Child("port"), p.Port, msg))
		}
		if p.TargetPort.IntVal != 0 || p.TargetPort.StrVal == "" {
			if p.TargetPort.IntVal != 0 {
				for _, msg := range validation.IsValidPortNum(int(p.TargetPort.IntVal)) {
					errs = append(errs, field.Invalid(pp.Child("targetPort"), p.TargetPort.IntVal, msg))
				}
			}
		} else {
			for _, msg := range validation.IsValidPortName(p.TargetPort.StrVal) {
				errs = append(errs, field.Invalid(pp.Child("targetPort"), p.TargetPort.StrVal, msg))
			}
		}
	}
	return errs
}

func checkDeployment(v any) field.ErrorList {
	d, ok := v.(*appsv1.Deployment)
	if !ok {
		return nil
	}
	return checkWorkload(d.Spec.Selector, &d.Spec.Template)
}

func checkStatefulSet(v any) field.ErrorList {
	s, ok := v.(*appsv1.StatefulSet)
	if !ok {
		return nil
	}
	return checkWorkload(s.Spec.Selector, &s.Spec.Template)
}

// checkWorkload checks what a Deployment and a StatefulSet share: a selector
// that matches the pod template, and containers with names and images.
func checkWorkload(sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec) field.ErrorList {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	if sel == nil {
		errs = append(errs, field.Required(spec.Child("selector"), ""))
	} else {
		errs = append(errs, metav1validation.ValidateLabelSelector(sel, metav1validation.LabelSelectorValidationOptions{}, spec.Child("selector"))...)
		if len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
			errs = append(errs, field.Invalid(spec.Child("selector"), sel, "empty selector is invalid for deployment"))
		} else if s, err := metav1.LabelSelectorAsSelector(sel); err == nil && !s.Matches(labels.Set(tmpl.Labels)) {
			errs = append(errs, field.Invalid(spec.Child("template", "metadata", "labels"), tmpl.Labels, "`selector` does not match template `labels`"))
		}
	}
	pod := spec.Child("template", "spec")
	if len(tmpl.Spec.Containers) == 0 {
		errs = append(errs, field.Required(pod.Child("containers"), ""))
	}
	names := make(map[string]bool)
	for i, c := range tmpl.Spec.Containers {
		cp := pod.Child("containers").Index(i)
		if c.Name == "" {
			errs = append(errs, field.Required(cp.Child("name"), ""))
		} else {
			for _, msg := range validation.IsDNS1123Label(c.Name) {
				errs = append(errs, field.Invalid(cp.Child("name"), c.Name, msg))
			}
			if names[c.Name] {
				errs = append(errs, field.Duplicate(cp.Child("name"), c.Name))
			}
			names[c.Name] = true
		}
		if c.Image == "" {
			errs = append(errs, field.Required(cp.Child("image"), ""))
		}
	}
	return errs
}

// checkPrometheusRule checks the shape of spec.groups[].rules[]: every rule
// has an expr and exactly one of alert or record.
func checkPrometheusRule(v any) field.ErrorList {
	u, ok := v.(*unstructured.Unstructured)
	if !ok {
		return nil
	}
	spec := field.NewPath("spec")
	groups, found, err := unstructured.NestedSlice(u.Object, "spec", "groups")
	if err != nil {
		return field.ErrorList{field.Invalid(spec.Child("groups"), nil, err.Error())}
	}
	if !found {
		return field.ErrorList{field.Required(spec.Child("groups"), "")}
	}
	var errs field.ErrorList
	for i, g := range groups {
		gp := spec.Child("groups").Index(i)
		gm, ok := g.(map[string]any)
		if !ok {
			errs = append(errs, field.Invalid(gp, fmt.Sprintf("%T", g), "must be an object"))
			continue
		}
		if name, _ := gm["name"].(string); name == "" {
			errs = append(errs, field.Required(gp.Child("name"), ""))
		}
		rules, ok := gm["rules"].([]any)
		if !ok && gm["rules"] != nil {
			errs = append(errs, field.Invalid(gp.Child("rules"), fmt.Sprintf("%T", gm["rules"]), "must be a list"))
		}
		for j, r := range rules {
			rp := gp.Child("rules").Index(j)
			rm, ok := r.(map[string]any)
			if !ok {
				errs = append(errs, field.Invalid(rp, fmt.Sprintf("%T", r), "must be an object"))
				continue
			}
			if rm["expr"] == nil || rm["expr"] == "" {
				errs = append(errs, field.Required(rp.Child("expr"), ""))
			}
			alert, _ := rm["alert"].(string)
			record, _ := rm["record"].(string)
			if (alert == "") == (record == "") {
				errs = append(errs, field.Invalid(rp, nil, "exactly one of alert and record must be set"))
			}
		}
	}
	return errs
}
