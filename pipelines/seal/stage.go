package seal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"promised.dev/promised/pipelines/stage"
)

// Stage is the seal stage: run it as the last container of a pipeline
// whose earlier containers write plaintext Secrets. It seals every Secret
// in the output folder with the certificate, scope and fingerprint key the
// platform placed under the input folder (see Inputs), re-emitting the
// previous sealed bytes of every Secret whose content has not changed, and
// rewrites only the files that hold a Secret.
func Stage(ctx context.Context, c *stage.Context) error {
	files, err := readTree(c.Workspace.Output())
	if err != nil {
		return fmt.Errorf("reading the output to seal: %w", err)
	}
	cfg, err := configFrom(c.Input)
	if err != nil {
		return err
	}
	previous, err := readTree(c.Workspace.Previous())
	if err != nil {
		return fmt.Errorf("reading the previous output: %w", err)
	}
	sealed, _, err := SealFiles(cfg, files, previous)
	if err != nil {
		return err
	}
	for _, p := range sortedKeys(sealed) {
		if bytes.Equal(sealed[p], files[p]) {
			continue
		}
		// Checked per file: the encryption above is the slow part, and a
		// cancelled run's workspace is discarded anyway.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("sealing: %w", err)
		}
		if err := c.WriteFile(filepath.FromSlash(p), sealed[p]); err != nil {
			return err
		}
	}
	return nil
}

// configFrom reads the sealing inputs. Missing files leave their field
// empty: SealFiles only needs them when there is a Secret to seal, and
// says which one is missing then.
func configFrom(input func(rel string) ([]byte, error)) (Config, error) {
	var cfg Config
	read := func(rel string) ([]byte, error) {
		data, err := input(rel)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading input %s: %w", rel, err)
		}
		return data, nil
	}
	var err error
	if cfg.CertPEM, err = read(CertFile); err != nil {
		return cfg, err
	}
	if cfg.FingerprintKey, err = read(FingerprintKeyFile); err != nil {
		return cfg, err
	}
	scope, err := read(ScopeFile)
	if err != nil {
		return cfg, err
	}
	if cfg.Scope, err = ParseScope(string(scope)); err != nil {
		return cfg, fmt.Errorf("input %s: %w", ScopeFile, err)
	}
	return cfg, nil
}

// readTree reads every regular file under dir, keyed by slash-separated
// relative path. Anything else is skipped here and refused by output
// validation later.
func readTree(dir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir && errors.Is(err, fs.ErrNotExist) {
				return filepath.SkipDir
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = data
		return nil
	})
	if err != nil {
		return nil, err
	}
	return files, nil
}
