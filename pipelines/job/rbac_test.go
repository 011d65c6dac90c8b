package job

import (
	"testing"

	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"

	"promised.dev/promised/api/v1alpha1"
)

func TestGrants(t *testing.T) {
	ceiling := &Ceiling{Rules: []CeilingRule{
		{APIGroups: []string{""}, Resources: []string{"configmaps", "*/status"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{"apps"}, Resources: []string{"*"}, Verbs: []string{"get"}, ClusterWide: true},
		{APIGroups: []string{"*"}, Resources: []string{"widgets"}, Verbs: []string{"*"}},
	}}
	rule := func(ns string, groups, resources, verbs []string) v1alpha1.PolicyRule {
		return v1alpha1.PolicyRule{ResourceNamespace: ns, APIGroups: groups, Resources: resources, Verbs: verbs}
	}
	core, apps := []string{""}, []string{"apps"}
	for name, c := range map[string]struct {
		ceiling *Ceiling
		perms   []v1alpha1.PolicyRule
		want    []grant
		err     string
	}{
		"nothing asked": {ceiling, nil, nil, ""},
		"grouped by namespace, in order": {ceiling, []v1alpha1.PolicyRule{
			rule("", core, []string{"configmaps"}, []string{"get"}),
			rule("*", apps, []string{"deployments"}, []string{"get"}),
			rule("other", core, []string{"pods/status"}, []string{"list"}),
			rule("", []string{"example.com"}, []string{"widgets"}, []string{"delete"}),
		}, []grant{
			{Namespace: "req", Rules: []rbacv1.PolicyRule{
				{APIGroups: core, Resources: []string{"configmaps"}, Verbs: []string{"get"}},
				{APIGroups: []string{"example.com"}, Resources: []string{"widgets"}, Verbs: []string{"delete"}},
			}},
			{Namespace: "", Rules: []rbacv1.PolicyRule{{APIGroups: apps, Resources: []string{"deployments"}, Verbs: []string{"get"}}}},
			{Namespace: "other", Rules: []rbacv1.PolicyRule{{APIGroups: core, Resources: []string{"pods/status"}, Verbs: []string{"list"}}}},
		}, ""},
		"a verb beyond":         {ceiling, []v1alpha1.PolicyRule{rule("", core, []string{"configmaps"}, []string{"get", "watch"})}, nil, `spec.rbac.permissions[0] (apiGroups [""], resources ["configmaps"], verbs ["get" "watch"]): verb "watch" on "configmaps" (core group)`},
		"a resource beyond":     {ceiling, []v1alpha1.PolicyRule{rule("", core, []string{"secrets"}, []string{"get"})}, nil, `verb "get" on "secrets" (core group)`},
		"a group beyond":        {ceiling, []v1alpha1.PolicyRule{rule("", apps, []string{"configmaps"}, []string{"list"})}, nil, `verb "list" on "configmaps" in group "apps"`},
		"a wildcard asked":      {ceiling, []v1alpha1.PolicyRule{rule("", core, []string{"*"}, []string{"get"})}, nil, `verb "get" on "*" (core group)`},
		"cluster-wide beyond":   {ceiling, []v1alpha1.PolicyRule{rule("*", core, []string{"configmaps"}, []string{"get"})}, nil, `in every namespace: beyond the Job runner's RBAC ceiling`},
		"no ceiling namespaced": {nil, []v1alpha1.PolicyRule{rule("x", core, []string{"secrets"}, []string{"*"})}, []grant{{Namespace: "x", Rules: []rbacv1.PolicyRule{{APIGroups: core, Resources: []string{"secrets"}, Verbs: []string{"*"}}}}}, ""},
		"no ceiling cluster":    {nil, []v1alpha1.PolicyRule{rule("*", core, []string{"secrets"}, []string{"get"})}, nil, `cluster-wide permissions (resourceNamespace "*") need a ceiling`},
		"bad namespace":         {nil, []v1alpha1.PolicyRule{rule("Not_A_Namespace", core, []string{"secrets"}, []string{"get"})}, nil, `resourceNamespace "Not_A_Namespace"`},
		"namespace pattern":     {nil, []v1alpha1.PolicyRule{rule("team-*", core, []string{"secrets"}, []string{"get"})}, nil, `only "*" (every namespace) or one namespace's name`},
	} {
		p := v1alpha1.Pipeline{Spec: v1alpha1.PipelineSpec{RBAC: v1alpha1.RBAC{Permissions: c.perms}}}
		got, err := grants(p, "req", c.ceiling)
		if c.err != "" {
			require.ErrorContains(t, err, c.err, name)
			continue
		}
		require.NoError(t, err, name)
		require.Equal(t, c.want, got, name)
	}
}
