// Package images_test builds the images `make images` builds, with the
// same code (cmd/imagebuild), and runs every promise's test cases through
// the Docker runner in them: what passes here runs in a Kubernetes Job.
//
// It needs the docker CLI and a running engine; without them it fails and
// says what to install, rather than skipping.
package images_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"promised.dev/promised/cmd/builtin"
	"promised.dev/promised/cmd/imagebuild"
	"promised.dev/promised/pipelines/local"
	"promised.dev/promised/pipelines/scaffold"
	"promised.dev/promised/pipelines/stage"
)

// root is the source tree the images are built from.
const root = "../.."

// platformCases are the test cases that cannot pass in a container, keyed
// by case folder (relative to root). Their stages need what the platform
// gives only to stages it runs in-process (in the controller, or in
// `promised test`): other requests (stage.Objects), platform configuration
// Secrets (stage.Secrets) or the credential ledger. Such a stage never runs
// as a Job in production either: the controller runs built-in stages
// in-process. Each case still runs, and must fail for exactly its stated
// reason (its error names the missing service), so that an entry that
// stops being true is noticed.
var platformCases = map[string]platformCase{
	"promises/apiaggregator/target/testdata/conflicting":       readsRequests,
	"promises/apiaggregator/target/testdata/cross-namespace":   readsRequests,
	"promises/apiaggregator/target/testdata/namespace-refused": readsRequests,
	"promises/apiaggregator/target/testdata/rewrite":           readsRequests,
	"promises/apiaggregator/target/testdata/single":            readsRequests,
	"promises/apiaggregator/target/testdata/waiting":           readsRequests,
	"promises/apiaggregator/target/testdata/weighted":          readsRequests,

	"promises/database/testdata/dedicated-defaults":           mintsCredentials,
	"promises/database/testdata/dedicated-ha":                 mintsCredentials,
	"promises/database/testdata/shared-server-secret-missing": readsPlatformSecrets,
	"promises/database/testdata/shared-server-unreachable":    readsPlatformSecrets,

	"promises/natsuser/testdata/delete-never-issued":         mintsCredentials,
	"promises/natsuser/testdata/delete-resolver-unreachable": mintsCredentials,
	"promises/natsuser/testdata/delete-revocation-by-expiry": mintsCredentials,
	"promises/natsuser/testdata/issued-before":               readsPlatformSecrets,
	"promises/natsuser/testdata/revocation-not-configured":   readsPlatformSecrets,
	"promises/natsuser/testdata/signing-key-malformed":       readsPlatformSecrets,
	"promises/natsuser/testdata/signing-key-missing":         readsPlatformSecrets,
	"promises/natsuser/testdata/signing-key-of-the-operator": readsPlatformSecrets,
	"promises/natsuser/testdata/unknown-account":             readsPlatformSecrets,
}

// platformCase says what a case's stage needs from the platform.
type platformCase struct {
	// needs is the error a stage gets where the platform does not serve it.
	needs error
	why   string
}

var (
	readsRequests = platformCase{stage.ErrNoObjects,
		"the stage reads other requests (its ApiAggregator and the other targets) through stage.Objects, served only to in-process stages"}
	mintsCredentials = platformCase{stage.ErrNoLedger,
		"the stage finds the credential it issued before in the platform's credential ledger, served only to in-process stages"}
	readsPlatformSecrets = platformCase{stage.ErrNoSecrets,
		"the stage reads a platform configuration Secret (a signing key, a server's admin credentials) through stage.Secrets, served only to in-process stages"}
)

var (
	buildOnce sync.Once
	buildErr  error
	registry  *stage.Registry
)

// stageImages builds the promised-stage binary once and every built-in
// stage's image from it, as `make image-stages` does.
func stageImages(t *testing.T) *stage.Registry {
	t.Helper()
	buildOnce.Do(func() {
		b := &imagebuild.Builder{Source: root}
		if buildErr = b.CheckDocker(context.Background()); buildErr != nil {
			buildErr = fmt.Errorf("these tests build and run images: %w", buildErr)
			return
		}
		if registry, buildErr = builtin.Registry(); buildErr != nil {
			return
		}
		if buildErr = b.StageBase(context.Background(), ""); buildErr != nil {
			return
		}
		buildErr = b.Stages(context.Background(), registry.Names())
	})
	require.NoError(t, buildErr)
	return registry
}

// imageConfig is the part of `docker image inspect` these tests check.
type imageConfig struct {
	User       string
	Entrypoint []string
	Cmd        []string
}

func inspect(t *testing.T, image string) imageConfig {
	t.Helper()
	out, err := exec.Command("docker", "image", "inspect", "--format", "{{json .Config}}", image).Output()
	require.NoError(t, err, "docker image inspect %s", image)
	var c imageConfig
	require.NoError(t, json.Unmarshal(out, &c))
	return c
}

func TestStageImages(t *testing.T) {
	reg := stageImages(t)
	require.NotEmpty(t, reg.Names())
	for _, name := range reg.Names() {
		c := inspect(t, stage.Image(name))
		require.Equal(t, "65532:65532", c.User, "%s runs as a non-root uid", stage.Image(name))
		require.Equal(t, []string{"/promised-stage", name}, c.Entrypoint, "%s's entrypoint", stage.Image(name))
	}
	// FROM scratch: nothing but the binary (and the CA bundle), so there is
	// no shell to start.
	out, err := exec.Command("docker", "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", stage.Image(reg.Names()[0]), "-c", "true").CombinedOutput()
	require.Error(t, err, "a shell ran in %s: %s", stage.Image(reg.Names()[0]), out)
	// Without the contract's folders the stage fails on its own terms: the
	// binary is static and starts on an empty image.
	out, err = exec.Command("docker", "run", "--rm", "--network", "none", stage.Image(reg.Names()[0])).CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "promised-stage:")
}

// promiseDirs returns the example promise and every promise folder under
// promises/ that has test cases, relative to root.
func promiseDirs(t *testing.T) []string {
	t.Helper()
	dirs := []string{"examples/team"}
	err := filepath.WalkDir(filepath.Join(root, "promises"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testdata" {
			return filepath.SkipDir
		}
		if d.Name() != local.PromiseFile {
			return nil
		}
		dir := filepath.Dir(p)
		if info, err := os.Stat(filepath.Join(dir, "testdata")); err == nil && info.IsDir() {
			rel, err := filepath.Rel(root, dir)
			if err != nil {
				return err
			}
			dirs = append(dirs, filepath.ToSlash(rel))
		}
		return nil
	})
	require.NoError(t, err)
	sort.Strings(dirs[1:])
	return dirs
}

// TestPromiseCasesPassInStageImages runs each promise's test cases with
// every container in Docker, built-in stages included.
func TestPromiseCasesPassInStageImages(t *testing.T) {
	reg := stageImages(t)
	for _, dir := range promiseDirs(t) {
		t.Run(dir, func(t *testing.T) {
			p, err := local.LoadPromise(filepath.Join(root, dir))
			require.NoError(t, err)
			builtIn, _ := imagebuild.PromiseStages(p)
			if missing := imagebuild.Unregistered(reg, builtIn); len(missing) > 0 {
				t.Fatalf("promise %s runs built-in stages that promised-stage does not hold, so their images cannot run: %s. Register the promise's Stages() in cmd/builtin/builtin.go.", p.Name, strings.Join(missing, ", "))
			}
			entries, err := os.ReadDir(filepath.Join(root, dir, "testdata"))
			require.NoError(t, err)
			var inContainers, platform []string
			for _, e := range entries {
				if !e.IsDir() {
					continue
				}
				if _, ok := platformCases[dir+"/testdata/"+e.Name()]; ok {
					platform = append(platform, e.Name())
				} else {
					inContainers = append(inContainers, e.Name())
				}
			}
			opts := local.Options{Registry: reg, Runtime: local.RuntimeDocker}
			if len(inContainers) > 0 {
				results, err := local.RunCases(context.Background(), opts, casesCopy(t, dir, inContainers...), false)
				require.NoError(t, err)
				for _, r := range results {
					if !r.Passed() {
						t.Errorf("case %s/testdata/%s fails in its containers:\n%s%s", dir, r.Name, r.Diff, platformHint(r.Diff))
					}
				}
			}
			for _, name := range platform {
				key := dir + "/testdata/" + name
				pc := platformCases[key]
				results, err := local.RunCases(context.Background(), opts, casesCopy(t, dir, name), false)
				require.NoError(t, err)
				require.Len(t, results, 1)
				switch {
				case results[0].Passed():
					t.Errorf("case %s passes in its containers now: remove it from platformCases", key)
				case !strings.Contains(results[0].Diff, pc.needs.Error()):
					t.Errorf("case %s is in platformCases because %s, but it fails in its containers for another reason:\n%s", key, pc.why, results[0].Diff)
				default:
					t.Logf("not run in containers: %s: %s", key, pc.why)
				}
			}
		})
	}
}

// TestPlatformCasesExist keeps platformCases free of cases that were
// renamed or removed.
func TestPlatformCasesExist(t *testing.T) {
	for key := range platformCases {
		info, err := os.Stat(filepath.Join(root, filepath.FromSlash(key)))
		if err != nil || !info.IsDir() {
			t.Errorf("platformCases lists %s, which is not a test case folder: remove it", key)
		}
	}
}

// casesCopy returns a promise folder holding the promise and only the
// named cases (copied, so that a run can never rewrite the originals).
func casesCopy(t *testing.T, dir string, cases ...string) string {
	t.Helper()
	dst := t.TempDir()
	data, err := os.ReadFile(filepath.Join(root, dir, local.PromiseFile))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dst, local.PromiseFile), data, 0o644))
	for _, c := range cases {
		require.NoError(t, os.CopyFS(filepath.Join(dst, "testdata", c), os.DirFS(filepath.Join(root, dir, "testdata", c))))
	}
	return dst
}

// platformHint explains a failure caused by running a stage that needs the
// platform outside it.
func platformHint(diff string) string {
	for _, e := range []error{stage.ErrNoObjects, stage.ErrNoSecrets, stage.ErrNoLedger} {
		if strings.Contains(diff, e.Error()) {
			return "\nThe stage needs what only in-process stages get. If the case cannot do without it, add it to platformCases in test/images with the reason."
		}
	}
	return ""
}

// TestControllerImage builds the controller's image and runs its binary.
func TestControllerImage(t *testing.T) {
	stageImages(t) // checks Docker
	b := &imagebuild.Builder{Source: root}
	require.NoError(t, b.Controller(context.Background()))
	c := inspect(t, imagebuild.ControllerImage)
	require.Equal(t, "65532:65532", c.User)
	require.Equal(t, []string{"/promised"}, c.Entrypoint)
	require.Equal(t, []string{"controller"}, c.Cmd)
	// As config/manager runs it: read-only root filesystem with a writable
	// /tmp (an emptyDir there), non-root.
	out, err := exec.Command("docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", "--user", "65532:65532", imagebuild.ControllerImage, "version").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, "promised "+stage.Version+"\n", string(out))
}

// TestPromisedBuildCommand builds a promise's stage images the way a
// platform engineer does, with `promised build`.
func TestPromisedBuildCommand(t *testing.T) {
	stageImages(t) // checks Docker
	bin := filepath.Join(t.TempDir(), "promised")
	build := exec.Command("go", "build", "-o", bin, "./cmd/promised")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	cmd := exec.Command(bin, "build", "team")
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "%s", stderr.String())
	require.Equal(t, imagebuild.StageBaseImage+"\n"+stage.Image("team-render")+"\n", stdout.String())
	require.Equal(t, []string{"/promised-stage", "team-render"}, inspect(t, stage.Image("team-render")).Entrypoint)
}

// TestScaffoldDockerfileIsTheStageTemplate keeps the Dockerfile `promised
// init` writes the same recipe as the one `promised build` uses.
func TestScaffoldDockerfileIsTheStageTemplate(t *testing.T) {
	files, err := scaffold.Files(scaffold.Options{Name: "widget", Group: "example.com", Kind: "Widget"})
	require.NoError(t, err)
	tpl, err := os.ReadFile(filepath.Join(root, imagebuild.StageDockerfile))
	require.NoError(t, err)
	want, err := imagebuild.StageImageDockerfile(tpl, "widget-render")
	require.NoError(t, err)
	require.Equal(t, instructions(want), instructions(files["Dockerfile"]))
	require.Contains(t, string(want), "ARG BASE="+imagebuild.StageBaseImage)
}

func instructions(dockerfile []byte) []string {
	var out []string
	for _, l := range strings.Split(string(dockerfile), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}
