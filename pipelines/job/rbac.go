package job

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/api/v1alpha1"
)

// AllNamespaces is the resourceNamespace with which a pipeline asks for a
// permission in every namespace (a ClusterRole), as in Kratix.
const AllNamespaces = "*"

// Ceiling bounds what a pipeline may ask for in spec.rbac.permissions.
// Every group × resource × verb a permission names must be allowed by one
// of the rules, and a cluster-wide permission (resourceNamespace "*") only
// by a rule marked ClusterWide.
type Ceiling struct {
	Rules []CeilingRule
}

// CeilingRule allows every combination of its API groups, resources and
// verbs; "*" in a list allows anything there.
type CeilingRule struct {
	APIGroups []string
	Resources []string
	Verbs     []string
	// ClusterWide allows these permissions in every namespace
	// (resourceNamespace "*"), not only in one.
	ClusterWide bool
}

// ErrBeyondCeiling is returned (wrapped) when a pipeline asks for a
// permission the runner's ceiling does not allow.
var ErrBeyondCeiling = errors.New("beyond the Job runner's RBAC ceiling")

// grant is one Role (or ClusterRole) and its binding to the pipeline's
// ServiceAccount.
type grant struct {
	// Namespace of the Role; empty for a ClusterRole.
	Namespace string
	Rules     []rbacv1.PolicyRule
}

// grants groups a pipeline's permissions by where they are granted, in the
// order they first appear, after checking each against the ceiling. A nil
// ceiling allows any namespaced permission (the API server still refuses
// to let the runner grant more than it holds itself) and no cluster-wide
// one: a cluster-wide grant is a platform decision, not a promise
// author's.
func grants(p v1alpha1.Pipeline, requestNamespace string, c *Ceiling) ([]grant, error) {
	var out []grant
	index := map[string]int{}
	for i, perm := range p.Spec.RBAC.Permissions {
		ns := perm.ResourceNamespace
		switch {
		case ns == "":
			ns = requestNamespace
		case ns == AllNamespaces:
			ns = ""
		case strings.Contains(ns, "*"):
			return nil, fmt.Errorf("spec.rbac.permissions[%d]: resourceNamespace %q: only \"*\" (every namespace) or one namespace's name is supported", i, perm.ResourceNamespace)
		default:
			if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
				return nil, fmt.Errorf("spec.rbac.permissions[%d]: resourceNamespace %q: %s", i, ns, strings.Join(errs, "; "))
			}
		}
		if err := c.allows(perm, ns == ""); err != nil {
			return nil, fmt.Errorf("spec.rbac.permissions[%d] %s: %w", i, describeRule(perm), err)
		}
		rule := rbacv1.PolicyRule{
			APIGroups: perm.APIGroups, Resources: perm.Resources, Verbs: perm.Verbs, ResourceNames: perm.ResourceNames,
		}
		j, ok := index[ns]
		if !ok {
			j = len(out)
			index[ns] = j
			out = append(out, grant{Namespace: ns})
		}
		out[j].Rules = append(out[j].Rules, rule)
	}
	return out, nil
}

// allows reports whether every group × resource × verb of perm is under
// one ceiling rule.
func (c *Ceiling) allows(perm v1alpha1.PolicyRule, clusterWide bool) error {
	if c == nil {
		if clusterWide {
			return fmt.Errorf("cluster-wide permissions (resourceNamespace %q) need a ceiling that allows them: %w", AllNamespaces, ErrBeyondCeiling)
		}
		return nil
	}
	groups := perm.APIGroups
	if len(groups) == 0 {
		// RBAC matches nothing for an empty list, so neither do we; the
		// API server refuses the rule anyway.
		groups = []string{""}
	}
	for _, g := range groups {
		for _, r := range perm.Resources {
			for _, v := range perm.Verbs {
				if !c.covers(g, r, v, clusterWide) {
					scope := ""
					if clusterWide {
						scope = " in every namespace"
					}
					return fmt.Errorf("verb %q on %s%s: %w", v, groupResource(g, r), scope, ErrBeyondCeiling)
				}
			}
		}
	}
	return nil
}

func (c *Ceiling) covers(group, resource, verb string, clusterWide bool) bool {
	for _, r := range c.Rules {
		if clusterWide && !r.ClusterWide {
			continue
		}
		if matches(r.APIGroups, group) && resourceMatches(r.Resources, resource) && matches(r.Verbs, verb) {
			return true
		}
	}
	return false
}

// matches is RBAC's rule for groups and verbs: equal, or "*" in the list.
// A "*" asked for is only allowed by a "*" in the ceiling.
func matches(allowed []string, v string) bool {
	return slices.Contains(allowed, "*") || slices.Contains(allowed, v)
}

// resourceMatches also accepts "*/sub" for any resource's subresource
// sub, as RBAC does.
func resourceMatches(allowed []string, r string) bool {
	if matches(allowed, r) {
		return true
	}
	if _, sub, ok := strings.Cut(r, "/"); ok {
		return slices.Contains(allowed, "*/"+sub)
	}
	return false
}

func groupResource(group, resource string) string {
	if group == "" {
		return fmt.Sprintf("%q (core group)", resource)
	}
	return fmt.Sprintf("%q in group %q", resource, group)
}

func describeRule(p v1alpha1.PolicyRule) string {
	s := fmt.Sprintf("(apiGroups %q, resources %q, verbs %q", p.APIGroups, p.Resources, p.Verbs)
	if p.ResourceNamespace != "" {
		s += fmt.Sprintf(", resourceNamespace %q", p.ResourceNamespace)
	}
	return s + ")"
}

// handbackRules is all the pipeline's ServiceAccount needs for the writer:
// creating ConfigMaps. RBAC cannot limit a create by name or label, so
// this is as tight as it gets: no get, list, update or delete, in one
// namespace.
var handbackRules = []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}}}

// identity is the ServiceAccount a promise's Jobs run as in one namespace,
// and everything granted to it.
type identity struct {
	Namespace      string
	ServiceAccount string
	Promise        string
	Pipeline       string
	Grants         []grant
}

// serviceAccountName is the ServiceAccount of a promise's Jobs. Its fixed
// suffix keeps it unambiguous, as does the hand-back Role's.
func serviceAccountName(promise string) string {
	return objectName("promised", promise, "pipeline")
}

// ensureIdentity creates or updates the ServiceAccount, its hand-back Role
// and the pipeline's grants. It converges: running it again with the same
// input changes nothing, and concurrent runs for the same promise do not
// fail each other.
func (r *Runner) ensureIdentity(ctx context.Context, id identity) error {
	labels := map[string]string{LabelManagedBy: ManagedBy, LabelPromise: labelValue(id.Promise)}
	annotations := map[string]string{annPromise: id.Promise}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: id.ServiceAccount, Namespace: id.Namespace}}
	automount := false
	if err := r.ensure(ctx, sa, func() {
		mergeMeta(&sa.ObjectMeta, labels, annotations)
		// Tokens are mounted only where the runner puts them.
		sa.AutomountServiceAccountToken = &automount
	}); err != nil {
		return err
	}
	subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: id.ServiceAccount, Namespace: id.Namespace}
	handback := objectName("promised", id.Promise, "handback")
	if err := r.ensureRole(ctx, id.Namespace, handback, handback, handbackRules, subject, labels, annotations); err != nil {
		return err
	}
	pipelineLabels := map[string]string{LabelManagedBy: ManagedBy, LabelPromise: labelValue(id.Promise), LabelPipeline: labelValue(id.Pipeline)}
	pipelineAnnotations := map[string]string{annPromise: id.Promise, annPipeline: id.Pipeline}
	role := hashedName("promised", id.Promise, id.Pipeline)
	for _, g := range id.Grants {
		// A Role in another namespace, or a ClusterRole, may be bound to
		// the ServiceAccounts of several namespaces: one binding each.
		binding := role
		if g.Namespace != id.Namespace {
			binding = hashedName("promised", id.Promise, id.Pipeline, id.Namespace)
		}
		if err := r.ensureRole(ctx, g.Namespace, role, binding, g.Rules, subject, pipelineLabels, pipelineAnnotations); err != nil {
			return err
		}
	}
	return nil
}

// ensureRole creates or updates a Role (a ClusterRole when namespace is
// empty) holding exactly rules, and a binding of it to subject.
func (r *Runner) ensureRole(ctx context.Context, namespace, role, binding string, rules []rbacv1.PolicyRule, subject rbacv1.Subject, labels, annotations map[string]string) error {
	var roleObj, bindingObj client.Object
	var setRules, setBinding func()
	if namespace == "" {
		cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role}}
		crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: binding}}
		roleObj, bindingObj = cr, crb
		setRules = func() { mergeMeta(&cr.ObjectMeta, labels, annotations); cr.Rules = rules }
		setBinding = func() {
			mergeMeta(&crb.ObjectMeta, labels, annotations)
			crb.RoleRef = rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role}
			crb.Subjects = []rbacv1.Subject{subject}
		}
	} else {
		ro := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: role, Namespace: namespace}}
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: binding, Namespace: namespace}}
		roleObj, bindingObj = ro, rb
		setRules = func() { mergeMeta(&ro.ObjectMeta, labels, annotations); ro.Rules = rules }
		setBinding = func() {
			mergeMeta(&rb.ObjectMeta, labels, annotations)
			rb.RoleRef = rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role}
			rb.Subjects = []rbacv1.Subject{subject}
		}
	}
	if err := r.ensure(ctx, roleObj, setRules); err != nil {
		return err
	}
	return r.ensure(ctx, bindingObj, setBinding)
}

// ensure makes obj exist with what mutate sets, creating it or updating it
// only when mutate changed something. A lost race with another run
// (AlreadyExists on create, Conflict on update) is retried: runs of the
// same promise in the same namespace ensure the same objects at the same
// time.
func (r *Runner) ensure(ctx context.Context, obj client.Object, mutate func()) error {
	key := client.ObjectKeyFromObject(obj)
	kind := fmt.Sprintf("%T", obj)
	kind = kind[strings.LastIndex(kind, ".")+1:]
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		err = r.client.Get(ctx, key, obj)
		switch {
		case apierrors.IsNotFound(err):
			mutate()
			err = r.client.Create(ctx, obj)
			if apierrors.IsAlreadyExists(err) {
				continue
			}
		case err == nil:
			before := obj.DeepCopyObject()
			mutate()
			if equality.Semantic.DeepEqual(before, obj) {
				return nil
			}
			err = r.client.Update(ctx, obj)
			if apierrors.IsConflict(err) {
				continue
			}
		}
		break
	}
	if err != nil {
		return fmt.Errorf("ensuring %s %s: %w", kind, key, err)
	}
	return nil
}

// mergeMeta adds labels and annotations to m, keeping any others (a
// platform team may label the runner's objects for its own tooling).
func mergeMeta(m *metav1.ObjectMeta, labels, annotations map[string]string) {
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	for k, v := range labels {
		m.Labels[k] = v
	}
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	for k, v := range annotations {
		m.Annotations[k] = v
	}
}
