package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"promised.dev/promised/pipelines/stage"
)

// platformSecrets gives in-process stages the platform configuration
// Secrets, read straight from the apiserver (never cached: the controller
// does not keep every Secret of the cluster in memory, and a changed one
// must reach the next run) and only when labelled as platform
// configuration.
type platformSecrets struct {
	reader client.Reader
}

// Get implements stage.Secrets.
func (s platformSecrets) Get(ctx context.Context, namespace, name string) (map[string][]byte, error) {
	sec := &corev1.Secret{}
	if err := s.reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sec); err != nil {
		return nil, fmt.Errorf("reading platform Secret %s/%s: %w", namespace, name, err)
	}
	if sec.Labels[stage.LabelPlatformConfig] != "true" {
		return nil, fmt.Errorf("Secret %s/%s is not labelled %s=true, so stages may not read it", namespace, name, stage.LabelPlatformConfig)
	}
	return sec.Data, nil
}
