// Package testredis starts a real redis-server for tests: on 127.0.0.1, a
// free port, no persistence (redis-server --save "" --appendonly no), and
// killed when the test ends. Tests skip, saying why, when redis-server is
// not on PATH (CI's .ci/run installs it).
package testredis

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is one redis-server process (restartable on the same port and
// data directory).
type Server struct {
	Port int
	dir  string
	bin  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// Binary returns the path of redis-server, or skips the test.
func Binary(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not on PATH: the fleet store tests need a real Redis (apt-get install redis-server; CI's .ci/run installs it)")
	}
	return bin
}

// Start starts redis-server on a free loopback port.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		s := &Server{Port: port, dir: t.TempDir(), bin: bin}
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("starting redis-server: %v", lastErr)
	return nil
}

// StartOnPort starts redis-server on a given loopback port (one chosen
// earlier with FreePort, e.g. written into a Caddy config).
func StartOnPort(t testing.TB, port int) *Server {
	t.Helper()
	s := &Server{Port: port, dir: t.TempDir(), bin: Binary(t)}
	if err := s.start(); err != nil {
		t.Fatalf("starting redis-server on port %d: %v", port, err)
	}
	t.Cleanup(s.Stop)
	return s
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Addr is host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// URL is the redis:// URL of database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	logFile := filepath.Join(s.dir, "redis.log")
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.Port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--dbfilename", "dump.rdb",
		"--logfile", logFile,
		"--daemonize", "no",
	)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done, s.log = cmd, done, logFile
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("redis-server exited: %s", s.tail())
		default:
		}
		if reply, err := s.do("PING"); err == nil && reply == "+PONG" {
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("redis-server did not answer PING within 10s: %s", s.tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) tail() string {
	data, _ := os.ReadFile(s.log)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}

// Stop kills the server (SIGKILL: a crash, not a clean shutdown) and waits
// for it to exit. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // in case it was paused
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart snapshots the data (SAVE), kills the server and starts a new one
// on the same port with the same data: Redis came back after a crash.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Save(t)
	s.Stop()
	s.Start(t)
}

// Save writes the data to the snapshot that the next start loads.
func (s *Server) Save(t testing.TB) {
	t.Helper()
	if reply, err := s.do("SAVE"); err != nil || reply != "+OK" {
		t.Fatalf("redis SAVE: %q %v", reply, err)
	}
}

// Start starts a stopped server again on its port, with its data directory
// (and so the last snapshot, if any).
func (s *Server) Start(t testing.TB) {
	t.Helper()
	var err error
	for attempt := 0; attempt < 20; attempt++ { // the port may linger briefly
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("restarting redis-server on port %d: %v", s.Port, err)
}

// Pause stops the process (SIGSTOP): connections stay open but nothing
// answers, as with a network partition. Resume undoes it.
func (s *Server) Pause(t testing.TB) { s.signal(t, syscall.SIGSTOP) }

// Resume continues a paused server.
func (s *Server) Resume(t testing.TB) { s.signal(t, syscall.SIGCONT) }

func (s *Server) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		t.Fatal("redis-server is not running")
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// Do sends one command with a fresh connection and returns the first line
// of the reply (e.g. "+OK", ":1", "$5"), failing the test on error. Bulk
// replies are returned as "$<len>\n<data>".
func (s *Server) Do(t testing.TB, args ...string) string {
	t.Helper()
	reply, err := s.do(args...)
	if err != nil {
		t.Fatalf("redis %v: %v", args, err)
	}
	return reply
}

func (s *Server) do(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", s.Addr())
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	rd := bufio.NewReader(conn)
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "-") {
		return line, fmt.Errorf("%s", line[1:])
	}
	if strings.HasPrefix(line, "$") {
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return line, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return line + "\n" + string(buf[:n]), nil
	}
	return line, nil
}
