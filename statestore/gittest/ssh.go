package gittest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// sshServer accepts git-upload-pack and git-receive-pack over SSH for one
// authorized client key, and runs the git binary for them.
type sshServer struct {
	l         net.Listener
	config    *ssh.ServerConfig
	hostKey   ssh.PublicKey
	clientKey []byte // OpenSSH PEM
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     map[net.Conn]bool
}

// SSHURL is the ssh:// URL of repository name, starting the SSH endpoint on
// first use.
func (s *Server) SSHURL(name string) string {
	return "ssh://git@" + s.sshServer().l.Addr().String() + "/" + name
}

// SSHClientKey is a private key (OpenSSH PEM) the SSH endpoint accepts.
func (s *Server) SSHClientKey() []byte { return s.sshServer().clientKey }

// SSHKnownHosts is a known_hosts line for the SSH endpoint's host key.
func (s *Server) SSHKnownHosts() []byte {
	srv := s.sshServer()
	return []byte(knownhosts.Line([]string{knownhosts.Normalize(srv.l.Addr().String())}, srv.hostKey) + "\n")
}

// SSHAddr is the SSH endpoint's host:port.
func (s *Server) SSHAddr() string { return s.sshServer().l.Addr().String() }

// NewSSHKey returns a fresh ed25519 key pair: the private key as OpenSSH
// PEM and the public key. Tests use it for keys the server does not know.
func NewSSHKey() ([]byte, ssh.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "gittest")
	if err != nil {
		return nil, nil, err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(block), sshPub, nil
}

func (s *Server) sshServer() *sshServer {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ssh != nil {
		return s.ssh
	}
	srv, err := s.startSSH()
	if err != nil {
		s.t.Fatalf("gittest: starting SSH server: %v", err)
	}
	s.ssh = srv
	return srv
}

func (s *Server) startSSH() (*sshServer, error) {
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	hostSigner, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		return nil, err
	}
	clientPEM, clientPub, err := NewSSHKey()
	if err != nil {
		return nil, err
	}
	authorized := clientPub.Marshal()
	config := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), authorized) {
				return nil, nil
			}
			return nil, errors.New("unknown public key")
		},
	}
	config.AddHostKey(hostSigner)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &sshServer{l: l, config: config, hostKey: hostSigner.PublicKey(), clientKey: clientPEM, conns: map[net.Conn]bool{}}
	srv.wg.Add(1)
	go func() {
		defer srv.wg.Done()
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			srv.mu.Lock()
			srv.conns[nc] = true
			srv.mu.Unlock()
			srv.wg.Add(1)
			go func() {
				defer srv.wg.Done()
				srv.serveConn(nc, s)
				srv.mu.Lock()
				delete(srv.conns, nc)
				srv.mu.Unlock()
			}()
		}
	}()
	return srv, nil
}

func (srv *sshServer) close() {
	_ = srv.l.Close()
	srv.mu.Lock()
	for c := range srv.conns {
		_ = c.Close()
	}
	srv.mu.Unlock()
	srv.wg.Wait()
}

func (srv *sshServer) serveConn(nc net.Conn, s *Server) {
	defer nc.Close()
	sc, chans, reqs, err := ssh.NewServerConn(nc, srv.config)
	if err != nil {
		return // handshake refused: unknown key, or the client rejected our host key
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	var wg sync.WaitGroup
	for nch := range chans {
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, chReqs, err := nch.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveSession(ch, chReqs, s)
		}()
	}
	wg.Wait()
}

// serveSession runs the one git command a Git client asks for ("exec"
// request), wiring its stdio to the channel.
func serveSession(ch ssh.Channel, reqs <-chan *ssh.Request, s *Server) {
	defer ch.Close()
	var env []string
	for req := range reqs {
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			if ssh.Unmarshal(req.Payload, &kv) == nil && kv.Name == "GIT_PROTOCOL" {
				env = append(env, kv.Name+"="+kv.Value)
			}
			_ = req.Reply(true, nil)
		case "exec":
			var payload struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &payload); err != nil {
				_ = req.Reply(false, nil)
				return
			}
			cmd, err := s.gitCommand(payload.Command)
			if err != nil {
				_ = req.Reply(false, nil)
				fmt.Fprintf(ch.Stderr(), "gittest: %v\n", err)
				sendExit(ch, 128)
				return
			}
			_ = req.Reply(true, nil)
			cmd.Env = append(cmd.Env, env...)
			sendExit(ch, run(cmd, ch))
			return
		default:
			_ = req.Reply(false, nil)
		}
	}
}

// gitCommand parses "git-upload-pack '/repo.git'" (or receive-pack).
func (s *Server) gitCommand(line string) (*exec.Cmd, error) {
	verb, arg, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok {
		return nil, fmt.Errorf("unsupported command %q", line)
	}
	var sub string
	switch verb {
	case "git-upload-pack":
		sub = "upload-pack"
	case "git-receive-pack":
		sub = "receive-pack"
	default:
		return nil, fmt.Errorf("unsupported command %q", verb)
	}
	arg = strings.TrimSpace(arg)
	if len(arg) >= 2 && arg[0] == '\'' && arg[len(arg)-1] == '\'' {
		arg = strings.ReplaceAll(arg[1:len(arg)-1], `'\''`, `'`)
		arg = strings.ReplaceAll(arg, `'\!'`, `!`)
	}
	dir, err := repoPath(s.root, arg)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.gitPath, sub, dir)
	cmd.Env = s.Env()
	return cmd, nil
}

func run(cmd *exec.Cmd, ch ssh.Channel) int {
	cmd.Stdout = ch
	cmd.Stderr = ch.Stderr()
	// A pipe rather than cmd.Stdin = ch: Wait would otherwise wait for the
	// client to close its side, which it does only after reading our exit.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 128
	}
	if err := cmd.Start(); err != nil {
		return 128
	}
	go func() {
		_, _ = io.Copy(stdin, ch)
		_ = stdin.Close()
	}()
	if err := cmd.Wait(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		return 128
	}
	return 0
}

func sendExit(ch ssh.Channel, code int) {
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
