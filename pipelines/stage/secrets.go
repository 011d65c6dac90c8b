package stage

import (
	"context"
	"errors"
)

// LabelPlatformConfig marks the Secrets stages may read: platform
// configuration such as a NATS account's signing key or a database
// server's admin credentials. Unlabelled Secrets are never served.
const LabelPlatformConfig = "promised.dev/platform-config"

// Secrets lets a stage read platform configuration Secrets, named by the
// promise's pipeline configuration (not by the request), without a client
// of its own.
type Secrets interface {
	// Get returns the data of a Secret labelled LabelPlatformConfig=true.
	Get(ctx context.Context, namespace, name string) (map[string][]byte, error)
}

// WithSecrets gives stages read access to platform Secrets (nil: none).
func WithSecrets(s Secrets) Option { return func(c *Context) { c.secrets = s } }

// ErrNoSecrets is returned by Context.Secrets where the platform gives no
// Secret access.
var ErrNoSecrets = errors.New("no access to platform Secrets here: stages that need platform configuration run in-process, in the controller or in a local run given an objects folder holding the Secrets")

// Secrets returns read access to platform configuration Secrets.
func (c *Context) Secrets() (Secrets, error) {
	if c == nil || c.secrets == nil {
		return nil, ErrNoSecrets
	}
	return c.secrets, nil
}
