// Command probe is the test kubelet's test container: it reports what it
// sees of its pod through its termination message, fails or sleeps on
// request.
//
//	probe report   writes NAME=value for each variable in $PROBE_ENV, the
//	               content of each file in $PROBE_FILES (comma-separated)
//	               and, with PROBE_WHOAMI set, the user its in-cluster
//	               credentials authenticate as
//	probe fail CODE MESSAGE
//	               prints MESSAGE on stderr and exits with CODE
//	probe sleep DURATION
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: probe report|fail|sleep")
	}
	switch args[0] {
	case "report":
		return report()
	case "fail":
		if len(args) != 3 {
			return fmt.Errorf("usage: probe fail CODE MESSAGE")
		}
		code, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, args[2])
		os.Exit(code)
	case "sleep":
		d, err := time.ParseDuration(args[1])
		if err != nil {
			return err
		}
		time.Sleep(d)
		return nil
	}
	return fmt.Errorf("unknown mode %q", args[0])
}

func report() error {
	var b strings.Builder
	for _, name := range split(os.Getenv("PROBE_ENV")) {
		fmt.Fprintf(&b, "env %s=%s\n", name, os.Getenv(name))
	}
	for _, f := range split(os.Getenv("PROBE_FILES")) {
		data, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintf(&b, "file %s: %v\n", f, err)
			continue
		}
		fmt.Fprintf(&b, "file %s=%s\n", f, data)
	}
	if os.Getenv("PROBE_WHOAMI") != "" {
		user, err := whoami()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "user=%s\n", user)
	}
	fmt.Fprintf(&b, "writing to /: %v\n", os.WriteFile("/probe-root-write", nil, 0o644))
	fmt.Fprintf(&b, "uid=%d gid=%d\n", os.Getuid(), os.Getgid())
	return os.WriteFile("/dev/termination-log", []byte(b.String()), 0o644)
}

func whoami() (string, error) {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return "", err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", err
	}
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return r.Status.UserInfo.Username, nil
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
