package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// envInfo describes the machine and the software measured.
type envInfo struct {
	CPUModel     string    `json:"cpu_model"`
	CPUs         int       `json:"cpus"`
	MemGiB       float64   `json:"mem_gib"`
	Kernel       string    `json:"kernel"`
	OS           string    `json:"os"`
	LoadAvgStart string    `json:"loadavg_start"`
	LoadAvgEnd   string    `json:"loadavg_end"`
	Versions     []version `json:"versions"`
	// Tree is the commit the binaries were built from, as "abc1234", with
	// " + uncommitted changes" when the working tree differed from it.
	Tree string `json:"tree,omitempty"`
}

type version struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

func collectEnv(binDir, root string) envInfo {
	e := envInfo{
		Kernel:       readTrimmed("/proc/sys/kernel/osrelease"),
		LoadAvgStart: readLoadAvg(),
		Tree:         treeVersion(root),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "processor":
				e.CPUs++
			case "model name":
				e.CPUModel = strings.TrimSpace(v)
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				e.MemGiB = kb / (1 << 20)
			}
		}
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				e.OS = strings.Trim(v, `"`)
			}
		}
	}

	if bi, err := buildinfo.ReadFile(filepath.Join(binDir, "forwarder")); err == nil {
		e.Versions = append(e.Versions, version{"Go (upstream, forwarder, wasmgate)", bi.GoVersion})
		for _, d := range bi.Deps {
			if d.Path == "github.com/valyala/fasthttp" {
				e.Versions = append(e.Versions, version{"fasthttp (forwarder)", d.Version})
			}
		}
	}
	add := func(name string, argv ...string) {
		e.Versions = append(e.Versions, version{name, commandVersion(argv...)})
	}
	add("wasmgate", filepath.Join(binDir, "wasmgate"), "version")
	add("nginx", "nginx", "-v")
	add("HAProxy", "haproxy", "-v")
	add("Caddy", "caddy", "version")
	add("wrk", "wrk", "-v")
	add("h2load", "h2load", "--version")
	return e
}

// commandVersion returns the first non-empty line a version command prints,
// whatever its exit status (wrk -v exits 1).
func commandVersion(argv ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			return line
		}
	}
	if err != nil {
		return "not available (" + err.Error() + ")"
	}
	return "unknown"
}

// treeVersion describes the git commit of the repository holding dir.
func treeVersion(dir string) string {
	git := func(args ...string) (string, error) {
		out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).Output()
		return strings.TrimSpace(string(out)), err
	}
	head, err := git("rev-parse", "--short", "HEAD")
	if err != nil || head == "" {
		return ""
	}
	if dirty, err := git("status", "--porcelain", "--untracked-files=normal", "--", ".."); err == nil && dirty != "" {
		head += " + uncommitted changes"
	}
	return head
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
