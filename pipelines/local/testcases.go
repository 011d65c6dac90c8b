package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/api/v1alpha1"
	"promised.dev/promised/pipelines/contract"
	"promised.dev/promised/pipelines/ledger"
)

// A test case is a folder under a promise's testdata/ holding:
//
//	request.yaml   the request (omitted for promise workflows)
//	case.yaml      optional: {type: resource|promise, action: configure|delete}
//	previous/      optional: the previous output, as the state store holds it
//	objects/       optional: other requests and platform Secrets (stage.Objects, stage.Secrets)
//	ledger/        optional: credentials the platform already holds (a ledger.Folder)
//	expected/      the snapshot the run must produce, or
//	error.txt      text the run's error must contain
//
// Each case runs with an empty ledger of its own (unless Options give one)
// and seals with a throwaway certificate; SealedSecrets are compared with
// their ciphertext and fingerprint masked (MaskSealed), since sealing is
// randomised.
const (
	CaseRequest  = "request.yaml"
	CaseSettings = "case.yaml"
	CasePrevious = "previous"
	CaseObjects  = "objects"
	CaseLedger   = "ledger"
	CaseExpected = "expected"
	CaseError    = "error.txt"
)

// CaseResult is the outcome of one test case.
type CaseResult struct {
	Name string
	// Diff is empty when the case passed.
	Diff string
}

// Passed reports whether the case produced what it expected.
func (c CaseResult) Passed() bool { return c.Diff == "" }

// RunCases runs every case under <promiseDir>/testdata with an engine
// built from opts. With update set, a case's expected/ folder is rewritten
// from what the run produced.
func RunCases(ctx context.Context, opts Options, promiseDir string, update bool) ([]CaseResult, error) {
	p, err := LoadPromise(promiseDir)
	if err != nil {
		return nil, err
	}
	root := filepath.Join(promiseDir, "testdata")
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("reading test cases: %w", err)
	}
	var results []CaseResult
	for _, ent := range entries {
		if !ent.IsDir() {
			continue
		}
		diff, err := runCase(ctx, opts, p, filepath.Join(root, ent.Name()), update)
		if err != nil {
			return results, fmt.Errorf("test case %s: %w", ent.Name(), err)
		}
		results = append(results, CaseResult{Name: ent.Name(), Diff: diff})
	}
	if len(results) == 0 {
		return nil, fmt.Errorf("no test cases in %s (one folder per case with %s and %s/)", root, CaseRequest, CaseExpected)
	}
	return results, nil
}

type caseSettings struct {
	Type   contract.WorkflowType `json:"type,omitempty"`
	Action contract.Action       `json:"action,omitempty"`
}

func runCase(ctx context.Context, opts Options, p *v1alpha1.Promise, dir string, update bool) (string, error) {
	caseDir := dir
	if objs := filepath.Join(dir, CaseObjects); exists(objs) {
		fo, err := LoadFolderObjects(objs)
		if err != nil {
			return "", err
		}
		opts.Objects, opts.Secrets = fo, fo
	}
	if opts.Ledger == nil {
		// Each case starts with an empty ledger of its own, as a request
		// does on its first run.
		tmp, err := os.MkdirTemp("", "promised-case-ledger-")
		if err != nil {
			return "", fmt.Errorf("creating the case's ledger: %w", err)
		}
		defer os.RemoveAll(tmp)
		ledgerDir := filepath.Join(tmp, CaseLedger)
		if seed := filepath.Join(caseDir, CaseLedger); exists(seed) {
			if err := os.CopyFS(ledgerDir, os.DirFS(seed)); err != nil {
				return "", fmt.Errorf("copying the case's ledger: %w", err)
			}
		}
		if opts.Ledger, err = ledger.NewFolder(ledgerDir); err != nil {
			return "", err
		}
	}
	e, err := NewEngine(opts)
	if err != nil {
		return "", err
	}
	set := caseSettings{Type: contract.TypeResource, Action: contract.ActionConfigure}
	if data, err := os.ReadFile(filepath.Join(dir, CaseSettings)); err == nil {
		if err := yaml.UnmarshalStrict(data, &set); err != nil {
			return "", fmt.Errorf("%s: %w", CaseSettings, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	req := Request{Promise: p, Type: set.Type, Action: set.Action}
	if set.Type != contract.TypePromise {
		obj, err := LoadObject(filepath.Join(dir, CaseRequest))
		if err != nil {
			return "", err
		}
		req.Object = obj
	}
	if prev := filepath.Join(dir, CasePrevious); exists(prev) {
		files, err := ReadSnapshot(prev)
		if err != nil {
			return "", err
		}
		req.Previous = files
	}
	res, runErr := Render(ctx, e, req)
	if want, err := os.ReadFile(filepath.Join(dir, CaseError)); err == nil {
		return expectError(runErr, strings.TrimSpace(string(want))), nil
	}
	if runErr != nil {
		return "run failed: " + runErr.Error(), nil
	}
	got, err := Snapshot(p, res)
	if err != nil {
		return "", err
	}
	if got, err = MaskSealed(got); err != nil {
		return "", err
	}
	expectedDir := filepath.Join(dir, CaseExpected)
	if update {
		return "", WriteSnapshot(expectedDir, got)
	}
	want, err := ReadSnapshot(expectedDir)
	if err != nil {
		return "", fmt.Errorf("reading %s (run with --update to create it): %w", CaseExpected, err)
	}
	return Diff(want, got), nil
}

func expectError(err error, want string) string {
	switch {
	case err == nil:
		return fmt.Sprintf("run succeeded, want an error containing %q", want)
	case !strings.Contains(err.Error(), want):
		return fmt.Sprintf("error %q does not contain %q", err.Error(), want)
	}
	return ""
}

// Diff is a unified diff per file of two snapshots, empty when equal.
func Diff(want, got map[string][]byte) string {
	names := map[string]bool{}
	for k := range want {
		names[k] = true
	}
	for k := range got {
		names[k] = true
	}
	sorted := make([]string, 0, len(names))
	for k := range names {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	var b strings.Builder
	for _, name := range sorted {
		w, inWant := want[name]
		g, inGot := got[name]
		if inWant && inGot && string(w) == string(g) {
			continue
		}
		from, to := "expected/"+name, "got/"+name
		if !inWant {
			from = "/dev/null"
		}
		if !inGot {
			to = "/dev/null"
		}
		d, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A: difflib.SplitLines(string(w)), B: difflib.SplitLines(string(g)),
			FromFile: from, ToFile: to, Context: 3,
		})
		b.WriteString(d)
	}
	return b.String()
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
