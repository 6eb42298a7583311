// Package childproc starts and ends the processes of the bench programs
// (Caddy, redis-server, CLI runs) so that no exit path leaves one behind,
// and reads the machine's load average their reports print.
package childproc

import (
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

// Group tracks long-lived children, so every exit path can end them. Each
// runs in its own process group (a Ctrl-C in the terminal reaches only the
// bench program, which then stops them in order) with Pdeathsig, so they
// die with it even if it is SIGKILLed. The zero Group is ready to use.
type Group struct {
	mu    sync.Mutex
	procs map[*exec.Cmd]string
}

// SysProcAttr is the process setup of every child: own group, killed when
// the bench program dies.
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// Add tracks a started child under a name.
func (g *Group) Add(cmd *exec.Cmd, name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.procs == nil {
		g.procs = map[*exec.Cmd]string{}
	}
	g.procs[cmd] = name
}

// Remove forgets a child that has exited.
func (g *Group) Remove(cmd *exec.Cmd) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.procs, cmd)
}

// KillAll SIGKILLs every child's process group (the hard deadline path).
func (g *Group) KillAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for cmd := range g.procs {
		if cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	}
}

// StopAll asks every child to stop (SIGTERM to its group), then SIGKILLs
// what is still there after 5 s.
func (g *Group) StopAll() {
	g.mu.Lock()
	procs := make([]*exec.Cmd, 0, len(g.procs))
	for cmd := range g.procs {
		procs = append(procs, cmd)
	}
	g.mu.Unlock()
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

// Run runs a short-lived command (the CLI, caddy reload) with a timeout, in
// its own process group, and returns its trimmed stdout; on failure the
// error carries stderr's last line.
func Run(ctx context.Context, timeout time.Duration, dir, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = SysProcAttr()
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

// PortFree reports whether 127.0.0.1:port can be bound now.
func PortFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// LoadAvg is the machine's load average over 1, 5 and 15 minutes (Linux),
// to read the figures of a run by; "?" where /proc has none.
func LoadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
