package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/scopegate/scopegate/bench/internal/childproc"
)

// redisServer is one redis-server process, restartable on the same port
// and data directory.
type redisServer struct {
	bin, dir string
	port     int
	procs    *childproc.Group

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (r *redisServer) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

// start runs redis-server and waits until it answers PING (10 s at most).
// The append-only file, fsynced on every write, is what makes a SIGKILL
// lose nothing that a CLI change had been told was written.
func (r *redisServer) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cmd := exec.Command(r.bin,
		"--port", fmt.Sprint(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "yes", "--appendfsync", "always",
		"--dir", r.dir, "--logfile", r.dir+"/redis.log", "--daemonize", "no")
	cmd.SysProcAttr = childproc.SysProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	r.procs.Add(cmd, "redis-server")
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); r.procs.Remove(cmd); close(done) }()
	r.cmd, r.done = cmd, done
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("redis-server exited: %s", tailFile(r.dir+"/redis.log", 3))
		default:
		}
		if redisPing(r.port) == nil {
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("redis-server did not answer PING within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restart starts a killed server again (retrying while the port lingers).
func (r *redisServer) restart() error {
	var err error
	for range 20 {
		if err = r.start(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// kill SIGKILLs the server (a crash, not a shutdown) and waits for it.
func (r *redisServer) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
}

// redisPing sends PING and expects +PONG (a loading server answers an
// error, which is not ready).
func redisPing(port int) error {
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING: %q", strings.TrimSpace(line))
	}
	return nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tailFile returns the last n lines of a file (for error messages).
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// setMigrate sets net.ipv4.tcp_migrate_req=1 and reads it back. The
// setting is per network namespace: called only with -private-netns, in
// the namespace soak.sh made, so the host's is never written. With it,
// connections still queued on the listening socket that a reload closes
// move to the new one instead of being reset.
func setMigrate() error {
	const knob = "/proc/sys/net/ipv4/tcp_migrate_req"
	if err := os.WriteFile(knob, []byte("1\n"), 0o644); err != nil {
		return err
	}
	b, err := os.ReadFile(knob)
	if err != nil {
		return err
	}
	if v := strings.TrimSpace(string(b)); v != "1" {
		return fmt.Errorf("%s reads %q after writing 1", knob, v)
	}
	return nil
}

// migrateReq is net.ipv4.tcp_migrate_req as this process sees it.
func migrateReq() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
