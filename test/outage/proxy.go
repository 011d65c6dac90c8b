// Package outage holds the tests of the platform's behaviour when what it
// depends on goes away: the kube-apiserver, the Git server.
package outage

import (
	"io"
	"net"
	"sync"
	"time"
)

// proxy forwards TCP connections to a target and can be cut (listener
// closed, every connection dropped) and restored on the same address, as a
// restarting or unreachable kube-apiserver looks to its clients.
type proxy struct {
	target string
	addr   string

	mu    sync.Mutex
	l     net.Listener
	conns map[net.Conn]bool
}

func newProxy(target string) (*proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{target: target, addr: l.Addr().String(), conns: map[net.Conn]bool{}}
	p.serve(l)
	return p, nil
}

func (p *proxy) serve(l net.Listener) {
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
}

func (p *proxy) pipe(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// cut refuses new connections and drops every open one.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.l.Close()
	for c := range p.conns {
		_ = c.Close()
	}
}

// restore listens again on the same address.
func (p *proxy) restore() error {
	var l net.Listener
	var err error
	for range 100 {
		if l, err = net.Listen("tcp", p.addr); err == nil {
			p.serve(l)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}
