package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is one program started by the suite, in a session (hence a
// process group) of its own so that stopping it also stops the workers it
// forks (nginx). See ownSession for why a session.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done is closed
}

// ownSession returns the attributes that start a process in a new session.
// With the kernel's autogroup scheduling (sched_autogroup_enabled), CPU time
// is shared first between sessions and only then between the processes of
// one: were wrk, the upstream and the proxy in the suite's session, they
// would share one session's weight, split across both cores, against every
// other session on the machine. Each in a session of its own competes on
// its core as any other session does. A new session also means a new process
// group, whose id is the pid.
func ownSession() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
}

// favour applies niceness to pid's session when autogroup scheduling is on
// (where a process's own niceness only ranks it within its session); the
// pinned argv already carries it for the process itself. Failures are
// logged once and otherwise ignored: the figures stay valid, only less
// protected from other work.
func favour(pid, nice int) {
	if nice == 0 || readTrimmed("/proc/sys/kernel/sched_autogroup_enabled") != "1" {
		return
	}
	err := os.WriteFile(fmt.Sprintf("/proc/%d/autogroup", pid), []byte(strconv.Itoa(nice)), 0)
	if err != nil {
		favourOnce.Do(func() { log.Printf("cannot set the session niceness of pid %d: %v", pid, err) })
	}
}

var favourOnce sync.Once

// registry tracks every process group started, so that every exit path,
// signals included, can stop them all. Its zero value is ready to use.
type registry struct {
	mu    sync.Mutex
	procs map[int]*process // by pid, which is also the pgid
	// pgidFile, if set, lists the live process groups, one a line, for the
	// driving script to clean up should this program be killed outright.
	pgidFile string
	// nice is passed to favour for every process started.
	nice int
}

// start runs argv with its output appended to logPath. env, if not nil,
// is added to the environment.
func (r *registry) start(name, logPath string, env []string, argv ...string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = ownSession()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	favour(cmd.Process.Pid, r.nice)
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	r.mu.Lock()
	if r.procs == nil {
		r.procs = make(map[int]*process)
	}
	r.procs[cmd.Process.Pid] = p
	r.writePgidsLocked()
	r.mu.Unlock()
	return p, nil
}

// stop ends p's process group: SIGTERM, then SIGKILL after a grace period.
func (r *registry) stop(p *process) {
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	// The leader may be gone while a worker lingers: kill the group anyway.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
	r.mu.Lock()
	delete(r.procs, pgid)
	r.writePgidsLocked()
	r.mu.Unlock()
}

// stopAll stops every process still running.
func (r *registry) stopAll() {
	r.mu.Lock()
	ps := make([]*process, 0, len(r.procs))
	for _, p := range r.procs {
		ps = append(ps, p)
	}
	r.mu.Unlock()
	for _, p := range ps {
		r.stop(p)
	}
}

func (r *registry) writePgidsLocked() {
	if r.pgidFile == "" {
		return
	}
	var b strings.Builder
	for pgid := range r.procs {
		fmt.Fprintf(&b, "%d\n", pgid)
	}
	_ = os.WriteFile(r.pgidFile, []byte(b.String()), 0o644)
}

// exited reports whether p has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logTail returns the last n bytes of p's log, for error messages.
func (p *process) logTail(n int64) string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}

// pinned returns argv run on one CPU only, at the given niceness when it
// is not zero. Both taskset and nice exec the program in place, so its pid
// is theirs.
func pinned(cpu, nice int, argv ...string) []string {
	out := []string{"taskset", "-c", strconv.Itoa(cpu)}
	if nice != 0 {
		out = append([]string{"nice", "-n", strconv.Itoa(nice)}, out...)
	}
	return append(out, argv...)
}

// procStat is what the suite reads from /proc/PID/stat.
type procStat struct {
	pgrp  int
	ticks uint64 // utime + stime, in clock ticks
}

// parseProcStat parses the content of /proc/PID/stat. The command name, in
// parentheses, may itself hold spaces and parentheses, so fields are counted
// from the last ')'.
func parseProcStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("no ')' in stat line")
	}
	// After the name: field 3 (state) is fields[0], so field n is fields[n-3].
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("stat line has %d fields after the name", len(f))
	}
	pgrp, err := strconv.Atoi(f[5-3])
	if err != nil {
		return procStat{}, fmt.Errorf("pgrp: %w", err)
	}
	utime, err := strconv.ParseUint(f[14-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("utime: %w", err)
	}
	stime, err := strconv.ParseUint(f[15-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("stime: %w", err)
	}
	return procStat{pgrp: pgrp, ticks: utime + stime}, nil
}

// groupTicks returns the CPU time, in clock ticks, used so far by the live
// processes of process group pgid (a proxy and any workers it forked).
func groupTicks(pgid int) (uint64, error) {
	var sum uint64
	err := eachInGroup(pgid, func(_ string, st procStat) { sum += st.ticks })
	return sum, err
}

// eachInGroup calls fn with the /proc directory and the stat line of every
// live process of group pgid, and fails when there is none.
func eachInGroup(pgid int, fn func(dir string, st procStat)) error {
	dirs, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return err
	}
	found := false
	for _, path := range dirs {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // the process exited meanwhile
		}
		st, err := parseProcStat(b)
		if err != nil || st.pgrp != pgid {
			continue
		}
		fn(filepath.Dir(path), st)
		found = true
	}
	if !found {
		return fmt.Errorf("no process in group %d", pgid)
	}
	return nil
}

// groupRuntime returns the CPU time used so far by the live threads of the
// processes of group pgid, from each thread's schedstat, which counts
// nanoseconds: the clock ticks of groupTicks (10 ms) are too coarse for a
// run of a few thousand requests. The time of a thread that exits between
// two readings is lost; Go programs keep their threads. Where schedstat is
// missing, it falls back to the ticks.
func groupRuntime(pgid int, hz uint64) (time.Duration, error) {
	var sum, ticks uint64
	precise := true
	err := eachInGroup(pgid, func(dir string, st procStat) {
		ticks += st.ticks
		tasks, _ := filepath.Glob(filepath.Join(dir, "task", "[0-9]*", "schedstat"))
		if len(tasks) == 0 {
			precise = false
		}
		for _, path := range tasks {
			b, err := os.ReadFile(path)
			if err != nil {
				continue // the thread exited meanwhile
			}
			ns, err := parseSchedstat(b)
			if err != nil {
				precise = false
				continue
			}
			sum += ns
		}
	})
	if err != nil {
		return 0, err
	}
	if !precise {
		return time.Duration(ticks * uint64(time.Second) / hz), nil
	}
	return time.Duration(sum), nil
}

// parseSchedstat returns the first field of a schedstat line: the time the
// task has run on a CPU, in nanoseconds.
func parseSchedstat(b []byte) (uint64, error) {
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 0, errors.New("empty schedstat")
	}
	ns, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("schedstat run time: %w", err)
	}
	return ns, nil
}

// cpuTimes is one CPU's line of /proc/stat, in clock ticks.
type cpuTimes struct {
	task  uint64 // user + nice + system: time charged to processes
	irq   uint64 // irq + softirq: on loopback, mostly the network stack
	steal uint64 // taken by the hypervisor for other guests
	total uint64
}

// busy returns the ticks the CPU was not idle.
func (c cpuTimes) busy() uint64 { return c.task + c.irq + c.steal }

// parseCPUTimes returns the per-CPU lines ("cpu0", "cpu1", ...) of the
// content of /proc/stat, indexed by CPU number.
func parseCPUTimes(b []byte) (map[int]cpuTimes, error) {
	out := make(map[int]cpuTimes)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		n, err := strconv.Atoi(f[0][3:])
		if err != nil {
			continue
		}
		// user nice system idle iowait irq softirq steal [guest guest_nice]:
		// guest time is already counted in user, so stop at steal.
		var v [8]uint64
		for i := range v {
			if v[i], err = strconv.ParseUint(f[1+i], 10, 64); err != nil {
				return nil, fmt.Errorf("%s: %w", f[0], err)
			}
		}
		t := cpuTimes{task: v[0] + v[1] + v[2], irq: v[5] + v[6], steal: v[7]}
		for _, x := range v {
			t.total += x
		}
		out[n] = t
	}
	if len(out) == 0 {
		return nil, errors.New("no per-CPU line")
	}
	return out, nil
}

func readCPUTimes() (map[int]cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil, err
	}
	return parseCPUTimes(b)
}

// clockTicks returns the kernel's clock ticks per second (USER_HZ).
func clockTicks() uint64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64); err == nil && v > 0 {
			return v
		}
	}
	return 100 // USER_HZ on every Linux architecture the suite runs on
}

// groupPSS returns the proportional set size, in KiB, of the live
// processes of group pgid: each one's resident memory, with every page it
// shares with other processes (an nginx master and its worker, say)
// divided among them, so that the sum counts shared pages once. It reads
// the Pss line of /proc/PID/smaps_rollup, or VmRSS of /proc/PID/status
// where that is missing.
func groupPSS(pgid int) (int64, error) {
	var sum int64
	var firstErr error
	err := eachInGroup(pgid, func(dir string, _ procStat) {
		kb, err := processPSS(dir)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		sum += kb
	})
	if err == nil {
		err = firstErr
	}
	return sum, err
}

// processPSS reads one process's proportional set size, in KiB, from its
// /proc directory.
func processPSS(dir string) (int64, error) {
	if b, err := os.ReadFile(filepath.Join(dir, "smaps_rollup")); err == nil {
		if kb, ok := kibField(b, "Pss:"); ok {
			return kb, nil
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return 0, err
	}
	if kb, ok := kibField(b, "VmRSS:"); ok {
		return kb, nil
	}
	return 0, fmt.Errorf("%s: no Pss or VmRSS", dir)
}

// kibField returns the value of the line "name N kB" of a /proc file.
func kibField(b []byte, name string) (int64, bool) {
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0, false
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb, err == nil
		}
	}
	return 0, false
}
