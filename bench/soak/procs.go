package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// children tracks the long-lived processes this program started (Caddy,
// Redis), so every exit path can end them. Each runs in its own process
// group (a Ctrl-C in the terminal reaches only this program, which then
// stops them in order) with Pdeathsig, so they die with this process even
// if it is SIGKILLed.
type children struct {
	mu    sync.Mutex
	procs map[*exec.Cmd]string
}

// sysProcAttr is the process setup of every child: own group, killed when
// this process dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func (c *children) add(cmd *exec.Cmd, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.procs == nil {
		c.procs = map[*exec.Cmd]string{}
	}
	c.procs[cmd] = name
}

func (c *children) remove(cmd *exec.Cmd) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.procs, cmd)
}

// killAll SIGKILLs every child's process group (the hard deadline path).
func (c *children) killAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for cmd := range c.procs {
		if cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	}
}

// stopAll asks every child to stop (SIGTERM to its group), then SIGKILLs
// what is still there after 5 s.
func (c *children) stopAll() {
	c.mu.Lock()
	procs := make([]*exec.Cmd, 0, len(c.procs))
	for cmd := range c.procs {
		procs = append(procs, cmd)
	}
	c.mu.Unlock()
	for _, cmd := range procs {
		if cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, cmd := range procs {
		for cmd.Process != nil && syscall.Kill(cmd.Process.Pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	}
}

// redisServer is one redis-server process, restartable on the same port
// and data directory.
type redisServer struct {
	bin, dir string
	port     int
	procs    *children

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
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	r.procs.add(cmd, "redis-server")
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); r.procs.remove(cmd); close(done) }()
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

// portFree reports whether 127.0.0.1:port can be bound now.
func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// runCmd runs a short-lived command (the CLI) with a timeout, in its own
// process group, and returns its trimmed stdout; on failure the error
// carries stderr's last line.
func runCmd(ctx context.Context, timeout time.Duration, dir, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		return "", fmt.Errorf("%s %s: %v: %s", bin, args[0], err, msg)
	}
	return strings.TrimSpace(stdout.String()), nil
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
