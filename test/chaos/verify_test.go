package chaos

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"promised.dev/promised/pipelines/ledger"
	"promised.dev/promised/promises/database"
	"promised.dev/promised/test/liveplatform"
)

// report is what verify found.
type report struct {
	failures []string

	ready, outputs, commits, roles, credentials, connected, ledger int
	sealedVersions                                                 int
	duplicates, orphans, leaks                                     int
}

func (r *report) fail(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

// key names a request the way the store's layout does.
func key(promise, ns, name string) string { return promise + " " + ns + "/" + name }

// verify checks the converged platform against what the test asked for.
func (p *platform) verify(ctx context.Context, t *testing.T, rs []*request) *report {
	rep := &report{}
	byKey := map[string]*request{}
	status := map[string]*unstructured.Unstructured{}
	for _, r := range rs {
		byKey[key(r.promise, r.ns(), r.name())] = r
		got, err := p.Dynamic.Resource(r.gvr).Namespace(r.ns()).Get(ctx, r.name(), metav1.GetOptions{})
		if err != nil {
			rep.fail("%s: %v", r.ref(), err)
			continue
		}
		status[r.ref()] = got
		if readyNow(got) {
			rep.ready++
		} else {
			rep.fail("%s not Ready: %s", r.ref(), readyMessage(got))
		}
	}

	// Git: every request's output under exactly the destination its
	// status names, and nothing else under resources/.
	commits, err := p.gitOut("rev-list", "main")
	if err != nil {
		rep.fail("%v", err)
		return rep
	}
	inHistory := map[string]bool{}
	for _, c := range strings.Fields(string(commits)) {
		inHistory[c] = true
	}
	rep.commits = len(inHistory)
	tree, err := p.gitOut("ls-tree", "-r", "--name-only", "main")
	if err != nil {
		rep.fail("%v", err)
		return rep
	}
	placed := map[string]map[string][]string{} // request key -> destination -> files
	for _, path := range strings.Split(strings.TrimSpace(string(tree)), "\n") {
		parts := strings.Split(path, "/")
		if len(parts) < 2 || parts[1] != "resources" {
			continue
		}
		if len(parts) < 6 {
			rep.fail("Git: unexpected file %s under resources/", path)
			continue
		}
		k := key(parts[3], parts[2], parts[4])
		if byKey[k] == nil {
			rep.fail("Git: orphan file %s: no request %s", path, k)
			rep.orphans++
			continue
		}
		if placed[k] == nil {
			placed[k] = map[string][]string{}
		}
		placed[k][parts[0]] = append(placed[k][parts[0]], path)
	}
	for _, r := range rs {
		got := status[r.ref()]
		if got == nil {
			continue
		}
		k := key(r.promise, r.ns(), r.name())
		dests, _, _ := unstructured.NestedStringSlice(got.Object, "status", "destinations")
		if len(dests) != 1 {
			rep.fail("%s: status.destinations %v: want exactly one", r.ref(), dests)
		}
		want := map[string]bool{}
		for _, d := range dests {
			want[d] = true
			if len(placed[k][d]) == 0 {
				rep.fail("%s: no output in Git under %s/resources/%s/%s/%s (lost write)", r.ref(), d, r.ns(), r.promise, r.name())
			}
		}
		for d := range placed[k] {
			if !want[d] {
				rep.fail("%s: a copy of its output under destination %s, but its status says %v", r.ref(), d, dests)
				rep.orphans++
			}
		}
		if len(placed[k]) > 0 {
			rep.outputs++
		}
		commit, _, _ := unstructured.NestedString(got.Object, "status", "commit")
		if commit != "" && !inHistory[commit] {
			rep.fail("%s: status.commit %s is not in main's history (lost write)", r.ref(), commit)
		}
	}

	// Every blob that ever held a SealedSecret of a Database: unseal it
	// with its destination's key, so that each request's passwords over
	// the whole history are known.
	history, err := p.sealedHistory()
	if err != nil {
		rep.fail("reading Git history: %v", err)
		return rep
	}
	var plaintexts []string
	ownerOf := map[string]string{} // password -> request key
	for k, secrets := range history {
		for secretName, values := range secrets {
			pw := map[string]bool{}
			rep.sealedVersions += len(values)
			// No rotation happens here: a second sealed version of one
			// Secret means a re-run re-sealed instead of re-emitting the
			// previous bytes, a commit (and a workload restart) for nothing.
			if len(values) > 1 {
				rep.fail("%s: SealedSecret %s was committed in %d different sealed versions; a re-run must re-emit the previous bytes", k, secretName, len(values))
			}
			for _, v := range values {
				if v.err != nil {
					rep.fail("%s: SealedSecret %s in Git (blob %s) does not unseal: %v", k, secretName, v.blob, v.err)
					continue
				}
				// The password is the secret (the uri holds it too); host,
				// user and database names are not.
				if s := string(v.data["password"]); s != "" {
					pw[s] = true
					plaintexts = append(plaintexts, s)
				}
			}
			if len(pw) > 1 {
				rep.fail("%s: Secret %s: %d different passwords reached Git over the run (a second credential was minted)", k, secretName, len(pw))
				rep.duplicates++
			}
			for s := range pw {
				if other, ok := ownerOf[s]; ok && other != k {
					rep.fail("%s and %s were delivered the same password", k, other)
					rep.duplicates++
				}
				ownerOf[s] = k
			}
		}
	}

	// The ledger: every entry belongs to a live request (by UID), and
	// each Database's delivered password is the ledger's.
	ledgerValues := map[string]map[string]bool{} // request uid -> values
	var entries corev1.SecretList
	if err := p.Client.List(ctx, &entries, client.MatchingLabels{ledger.LabelLedger: "true"}); err != nil {
		rep.fail("listing ledger Secrets: %v", err)
	}
	uids := map[string]*request{}
	for _, r := range rs {
		uids[r.uid] = r
	}
	for _, s := range entries.Items {
		rep.ledger++
		r := uids[s.Labels[ledger.LabelRequestUID]]
		if r == nil || r.ns() != s.Namespace || r.name() != s.Labels[ledger.LabelRequest] || r.promise != s.Labels[ledger.LabelPromise] {
			rep.fail("orphan ledger Secret %s/%s (labels %v): no such request", s.Namespace, s.Name, s.Labels)
			rep.orphans++
			continue
		}
		if ledgerValues[r.uid] == nil {
			ledgerValues[r.uid] = map[string]bool{}
		}
		for _, v := range s.Data {
			ledgerValues[r.uid][string(v)] = true
		}
	}

	// Current credentials: each Database's Secret in Git unseals, matches
	// the ledger, and (shared plan) logs in to its own database.
	rolesWanted := map[string]string{}
	for _, r := range rs {
		if r.promise != "database" {
			continue
		}
		got := status[r.ref()]
		if got == nil {
			continue
		}
		k := key(r.promise, r.ns(), r.name())
		dests, _, _ := unstructured.NestedStringSlice(got.Object, "status", "destinations")
		if len(dests) != 1 {
			continue
		}
		data, err := p.currentSecret(dests[0], r, r.secret)
		if err != nil {
			rep.fail("%s: %v", k, err)
			continue
		}
		rep.credentials++
		pw := string(data["password"])
		if pw == "" || !ledgerValues[r.uid][pw] {
			rep.fail("%s: the delivered password is not the one in its ledger entry", k)
			rep.duplicates++
		}
		if r.plan != "shared" {
			continue
		}
		rolesWanted[r.dbName] = "managed by promised.dev for Database " + r.ns() + "/" + r.name()
		if err := connectAs(ctx, string(data[database.KeyURI]), r.dbName); err != nil {
			rep.fail("%s: the delivered credential does not work: %s", k, redact(err.Error(), data))
		} else {
			rep.connected++
		}
	}

	// PostgreSQL: exactly one role (and its database) per shared
	// Database, and no other role of ours.
	roles, dbs, err := p.ourRoles(ctx)
	if err != nil {
		rep.fail("PostgreSQL: %v", err)
	}
	rep.roles = len(roles)
	for role, comment := range roles {
		want, ok := rolesWanted[role]
		switch {
		case !ok:
			rep.fail("PostgreSQL: orphan role %q (%s)", role, comment)
			rep.orphans++
		case want != comment:
			rep.fail("PostgreSQL: role %q has comment %q, want %q", role, comment, want)
		}
	}
	for role := range rolesWanted {
		if _, ok := roles[role]; !ok {
			rep.fail("PostgreSQL: no role %q for its shared Database", role)
		}
		if dbs[role] != role {
			rep.fail("PostgreSQL: database %q owned by %q, want by role %q", role, dbs[role], role)
		}
	}
	for db, owner := range dbs {
		if _, ok := rolesWanted[db]; !ok {
			rep.fail("PostgreSQL: orphan database %q (owner %q)", db, owner)
			rep.orphans++
		}
	}

	// No plaintext anywhere in Git, nor in the controller's logs.
	p.scanLeaks(rep, plaintexts)
	return rep
}

type unsealed struct {
	blob string
	data map[string][]byte
	err  error
}

// sealedHistory unseals every SealedSecret blob of the repository's
// history under a Database's folder: request key -> Secret name ->
// versions.
func (p *platform) sealedHistory() (map[string]map[string][]unsealed, error) {
	objs, err := p.gitOut("rev-list", "--all", "--objects")
	if err != nil {
		return nil, err
	}
	out := map[string]map[string][]unsealed{}
	for _, line := range strings.Split(string(objs), "\n") {
		sha, path, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		parts := strings.Split(path, "/")
		if len(parts) < 6 || parts[1] != "resources" || parts[3] != "database" {
			continue
		}
		k := key(parts[3], parts[2], parts[4])
		blob, err := p.gitOut("cat-file", "blob", sha)
		if err != nil {
			continue // a tree
		}
		for _, doc := range splitYAML(blob) {
			var meta struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if yaml.Unmarshal(doc, &meta) != nil || meta.Kind != "SealedSecret" {
				continue
			}
			key, ok := p.Keys[parts[0]]
			if !ok {
				continue
			}
			data, err := key.Unseal(doc)
			if out[k] == nil {
				out[k] = map[string][]unsealed{}
			}
			out[k][meta.Metadata.Name] = append(out[k][meta.Metadata.Name], unsealed{blob: sha, data: data, err: err})
		}
	}
	return out, nil
}

// currentSecret unseals the Secret name of request r from main.
func (p *platform) currentSecret(dest string, r *request, name string) (map[string][]byte, error) {
	dir := fmt.Sprintf("%s/resources/%s/%s/%s/", dest, r.ns(), r.promise, r.name())
	files, err := p.gitOut("ls-tree", "-r", "--name-only", "main", dir)
	if err != nil {
		return nil, err
	}
	for _, f := range strings.Fields(string(files)) {
		blob, err := p.gitOut("show", "main:"+f)
		if err != nil {
			return nil, err
		}
		for _, doc := range splitYAML(blob) {
			var meta struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if yaml.Unmarshal(doc, &meta) != nil || meta.Kind != "SealedSecret" || meta.Metadata.Name != name {
				continue
			}
			return p.Keys[dest].Unseal(doc)
		}
	}
	return nil, fmt.Errorf("no SealedSecret %s under %s in main", name, dir)
}

func splitYAML(b []byte) [][]byte {
	var out [][]byte
	for _, d := range bytes.Split(b, []byte("\n---")) {
		if len(bytes.TrimSpace(d)) > 0 {
			out = append(out, d)
		}
	}
	return out
}

func connectAs(ctx context.Context, uri, wantDB string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var user, db string
	if err := conn.QueryRow(ctx, "select current_user, current_database()").Scan(&user, &db); err != nil {
		return err
	}
	if user != wantDB || db != wantDB {
		return fmt.Errorf("connected as %s to %s, want %s to %s", user, db, wantDB, wantDB)
	}
	return nil
}

// ourRoles lists the roles whose comment says promised.dev manages them
// (name -> comment), and the databases owned by them or named like the
// test's (name -> owner).
func (p *platform) ourRoles(ctx context.Context) (map[string]string, map[string]string, error) {
	conn, err := p.pg.Connect(ctx, "postgres")
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	roles := map[string]string{}
	rows, err := conn.Query(ctx, `SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles
		WHERE shobj_description(oid, 'pg_authid') LIKE 'managed by promised.dev%' OR rolname LIKE 'chaos\_%'`)
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var name string
		var comment *string
		if err := rows.Scan(&name, &comment); err != nil {
			return nil, nil, err
		}
		roles[name] = deref(comment)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	dbs := map[string]string{}
	rows, err = conn.Query(ctx, `SELECT datname, pg_get_userbyid(datdba) FROM pg_database
		WHERE datname LIKE 'chaos\_%' OR pg_get_userbyid(datdba) IN (SELECT rolname FROM pg_roles WHERE shobj_description(oid, 'pg_authid') LIKE 'managed by promised.dev%')`)
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var name, owner string
		if err := rows.Scan(&name, &owner); err != nil {
			return nil, nil, err
		}
		dbs[name] = owner
	}
	return roles, dbs, rows.Err()
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// scanLeaks looks for each plaintext in every object of the repository
// (every blob, tree and commit, reachable or not) and in the controller's
// and PostgreSQL's logs.
func (p *platform) scanLeaks(rep *report, plaintexts []string) {
	if len(plaintexts) == 0 {
		return
	}
	sort.Strings(plaintexts)
	cmd := exec.Command(p.GitBin, "-C", filepath.Join(p.GitRoot, liveplatform.StateRepo), "cat-file", "--batch-all-objects", "--batch")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		rep.fail("%v", err)
		return
	}
	if err := cmd.Start(); err != nil {
		rep.fail("%v", err)
		return
	}
	br := bufio.NewReaderSize(stdout, 1<<20)
	for {
		header, err := br.ReadString('\n')
		if err == io.EOF {
			break
		}
		if err != nil {
			rep.fail("reading git cat-file: %v", err)
			break
		}
		f := strings.Fields(header)
		if len(f) != 3 {
			rep.fail("git cat-file: unexpected header %q", header)
			break
		}
		size, _ := strconv.Atoi(f[2])
		buf := make([]byte, size+1)
		if _, err := io.ReadFull(br, buf); err != nil {
			rep.fail("reading git cat-file: %v", err)
			break
		}
		for _, s := range plaintexts {
			if bytes.Contains(buf, []byte(s)) {
				rep.fail("plaintext credential in Git: %s object %s holds a delivered secret value", f[1], f[0])
				rep.leaks++
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		rep.fail("git cat-file --batch-all-objects: %v", err)
	}
	logs := append([]string{p.pg.LogPath()}, p.Logs...)
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		for _, s := range plaintexts {
			if bytes.Contains(b, []byte(s)) {
				rep.fail("plaintext credential in log %s", l)
				rep.leaks++
			}
		}
	}
}

func redact(msg string, data map[string][]byte) string {
	for _, v := range data {
		if len(v) >= 4 {
			msg = strings.ReplaceAll(msg, string(v), "<redacted>")
		}
	}
	return msg
}

// deletedReport is what verifyDeleted found.
type deletedReport struct {
	failures                                                       []string
	folders, roles, ledger, retainedRoles, retainedLedger, orphans int
}

// verifyDeleted checks that, once every request is gone, no request
// folder is left in Git, the roles and databases of deletionPolicy Delete
// are dropped (those of Retain stay, exactly once), and no ledger entry
// is left but those of Retain requests, which the garbage collector
// deletes through their owner reference (the test's control plane runs
// no garbage collector, so the test checks the reference).
func (p *platform) verifyDeleted(ctx context.Context, rs []*request) *deletedReport {
	rep := &deletedReport{}
	fail := func(format string, args ...any) { rep.failures = append(rep.failures, fmt.Sprintf(format, args...)) }
	tree, err := p.gitOut("ls-tree", "-r", "--name-only", "main")
	if err != nil {
		fail("%v", err)
	}
	seen := map[string]bool{}
	for _, path := range strings.Split(strings.TrimSpace(string(tree)), "\n") {
		parts := strings.Split(path, "/")
		if len(parts) >= 5 && parts[1] == "resources" {
			dir := strings.Join(parts[:5], "/")
			if !seen[dir] {
				seen[dir] = true
				rep.folders++
				rep.orphans++
				fail("after deletion: folder %s is still in Git", dir)
			}
		}
	}
	retained := map[string]*request{}
	retainedUIDs := map[string]*request{}
	for _, r := range rs {
		if r.promise == "database" && r.deletion == "Retain" {
			retainedUIDs[r.uid] = r
			if r.plan == "shared" {
				retained[r.dbName] = r
			}
		}
	}
	roles, dbs, err := p.ourRoles(ctx)
	if err != nil {
		fail("PostgreSQL: %v", err)
	}
	rep.roles = len(roles)
	for role, comment := range roles {
		r := retained[role]
		if r == nil {
			fail("after deletion: role %q (%s) is still on the server", role, comment)
			rep.orphans++
			continue
		}
		rep.retainedRoles++
	}
	for db, owner := range dbs {
		if retained[db] == nil {
			fail("after deletion: database %q (owner %q) is still on the server", db, owner)
			rep.orphans++
		}
	}
	for role := range retained {
		if _, ok := roles[role]; !ok {
			fail("after deletion: role %q of a deletionPolicy Retain Database was dropped", role)
		}
	}
	var entries corev1.SecretList
	if err := p.Client.List(ctx, &entries, client.MatchingLabels{ledger.LabelLedger: "true"}); err != nil {
		fail("listing ledger Secrets: %v", err)
	}
	for _, s := range entries.Items {
		rep.ledger++
		r := retainedUIDs[s.Labels[ledger.LabelRequestUID]]
		owned := false
		for _, o := range s.OwnerReferences {
			if r != nil && string(o.UID) == r.uid {
				owned = true
			}
		}
		if r == nil || !owned {
			fail("after deletion: ledger Secret %s/%s (labels %v) is left and no garbage collection would remove it", s.Namespace, s.Name, s.Labels)
			rep.orphans++
			continue
		}
		rep.retainedLedger++
	}
	return rep
}
