package deploy_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	op   string
	args string
}

func dockerfile(t *testing.T) []instruction {
	t.Helper()
	var out []instruction
	var cur *instruction
	for i, line := range strings.Split(string(fileData(t, "Dockerfile")), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur == nil && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur == nil {
			op, args, _ := strings.Cut(trimmed, " ")
			cur = &instruction{line: i + 1, op: strings.ToUpper(op)}
			trimmed = args
		} else if strings.HasPrefix(trimmed, "#") {
			continue
		}
		cont := strings.HasSuffix(trimmed, "\\")
		cur.args += strings.TrimSuffix(trimmed, "\\") + " "
		if !cont {
			cur.args = strings.Join(strings.Fields(cur.args), " ")
			out = append(out, *cur)
			cur = nil
		}
	}
	return out
}

// execForm decodes the JSON array form of ENTRYPOINT, CMD and HEALTHCHECK CMD.
func execForm(t *testing.T, in instruction, s string) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Errorf("Dockerfile:%d: %s %s: want the exec form (a JSON array): %v", in.line, in.op, s, err)
	}
	return v
}

// finalStage returns the instructions after the last FROM.
func finalStage(ins []instruction) []instruction {
	last := 0
	for i, in := range ins {
		if in.op == "FROM" {
			last = i
		}
	}
	return ins[last:]
}

func dockerfileCommandLines(t *testing.T) []commandLine {
	var entry, cmd []string
	for _, in := range finalStage(dockerfile(t)) {
		switch in.op {
		case "ENTRYPOINT":
			entry = execForm(t, in, in.args)
		case "CMD":
			cmd = execForm(t, in, in.args)
		}
	}
	if len(entry) != 1 || entry[0] != unitBinary {
		t.Errorf("Dockerfile: ENTRYPOINT %q, want [%q]", entry, unitBinary)
		return nil
	}
	return []commandLine{{where: "Dockerfile CMD", args: cmd}}
}

func TestDockerfile(t *testing.T) {
	ins := dockerfile(t)
	final := finalStage(ins)
	if !strings.Contains(final[0].args, "distroless/static") || !strings.Contains(final[0].args, "nonroot") {
		t.Errorf("Dockerfile:%d: the runtime is %q, want distroless static, nonroot", final[0].line, final[0].args)
	}
	var user, health string
	var exposed []int
	for _, in := range final {
		switch in.op {
		case "USER":
			user = in.args
		case "EXPOSE":
			for _, p := range strings.Fields(in.args) {
				n, err := strconv.Atoi(p)
				if err != nil {
					t.Errorf("Dockerfile:%d: EXPOSE %s", in.line, p)
				}
				exposed = append(exposed, n)
			}
		case "HEALTHCHECK":
			_, health, _ = strings.Cut(in.args, " CMD ")
			h := execForm(t, in, health)
			if len(h) != 2 || h[0] != "/usr/local/bin/httpprobe" {
				t.Errorf("Dockerfile:%d: HEALTHCHECK %q, want [/usr/local/bin/httpprobe URL]", in.line, h)
			} else {
				checkProbeURL(t, "Dockerfile HEALTHCHECK", "run", h[1], portOf(t, "config.DefaultAdminAddress", config.DefaultAdminAddress))
			}
		}
	}
	if user == "" || strings.HasPrefix(user, "0") || strings.HasPrefix(user, "root") {
		t.Errorf("Dockerfile: USER %q, want a non-root user", user)
	}
	if health == "" {
		t.Error("Dockerfile: no HEALTHCHECK")
	}
	// The ports are the defaults of the binary, and the listener port of
	// the containerized configurations.
	want := map[int]string{
		portOf(t, "admin", config.DefaultAdminAddress):                                        "the proxy's admin default",
		portOf(t, "api", controlplane.DefaultAPIAddr):                                         "the control plane's API default",
		portOf(t, "etcd", controlplane.DefaultEtcdClientAddr):                                 "the embedded etcd's client default",
		portOf(t, "k8s", configAt(t, "kubernetes/fleet/fleet.yaml").cfg.Listeners[0].Address): "the listener of the manifests",
	}
	for _, where := range []string{"compose/fleet.yaml", "kubernetes/edge/configmap.yaml#config.yaml", "kubernetes/sidecar/configmap.yaml#config.yaml"} {
		if cfg := configAt(t, where).cfg; cfg != nil {
			if _, ok := want[portOf(t, where, cfg.Listeners[0].Address)]; !ok {
				t.Errorf("%s: listens on %s, a port the image does not EXPOSE", where, cfg.Listeners[0].Address)
			}
		}
	}
	got := map[int]bool{}
	for _, p := range exposed {
		got[p] = true
		if _, ok := want[p]; !ok {
			t.Errorf("Dockerfile: EXPOSE %d is none of the ports wasmgate uses by default", p)
		}
	}
	for p, what := range want {
		if !got[p] {
			t.Errorf("Dockerfile: %d (%s) is not exposed", p, what)
		}
	}
	// The build: static, both programs, the plugins where the configurations
	// look for them, a version variable that exists.
	all := ""
	for _, in := range ins {
		all += in.args + "\n"
	}
	for _, s := range []string{
		"CGO_ENABLED=0", "-o /out/usr/local/bin/wasmgate ./cmd/wasmgate", "-o /out/usr/local/bin/httpprobe ./deploy/httpprobe",
		"/out" + pluginDir, "cp plugins/*/*.wasm",
	} {
		if !strings.Contains(all, s) {
			t.Errorf("Dockerfile does not hold %q", s)
		}
	}
	if m := regexp.MustCompile(`-X ([^ ]+)\.([a-zA-Z]+)=`).FindStringSubmatch(all); m != nil {
		pkg := strings.TrimPrefix(m[1], "github.com/wasmgate/wasmgate/")
		src, _ := filepath.Glob(filepath.Join("..", pkg, "*.go"))
		found := false
		for _, f := range src {
			b, _ := os.ReadFile(f)
			found = found || regexp.MustCompile(`(?m)^var `+m[2]+` = `).Match(b)
		}
		if !found {
			t.Errorf("Dockerfile: -X %s.%s names no package variable", m[1], m[2])
		}
	}
	if wasm, _ := filepath.Glob("../plugins/*/*.wasm"); len(wasm) == 0 {
		t.Error("no plugins/*/*.wasm for the Dockerfile to copy")
	}
	for _, in := range ins {
		if in.op != "COPY" || strings.Contains(in.args, "--from=") {
			continue
		}
		fields := strings.Fields(in.args)
		for _, src := range fields[:len(fields)-1] {
			if _, err := os.Stat(filepath.Join("..", src)); err != nil {
				t.Errorf("Dockerfile:%d: COPY %s: %v", in.line, src, err)
			}
		}
	}
}

// TestDockerignore checks that .dockerignore leaves in the build context
// every file the image's build reads.
func TestDockerignore(t *testing.T) {
	data, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []*regexp.Regexp
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf(".dockerignore: exceptions (%s) are not understood by this test", line)
		}
		patterns = append(patterns, dockerignorePattern(line))
	}
	ignored := func(rel string) bool {
		// A pattern excludes a path or any directory above it.
		for p := rel; p != "." && p != "/"; p = filepath.Dir(p) {
			for _, re := range patterns {
				if re.MatchString(filepath.ToSlash(p)) {
					return true
				}
			}
		}
		return false
	}
	if testing.Short() {
		t.Skip("-short: go list")
	}
	out, err := exec.Command(goTool(), "list", "-deps", "-f",
		`{{if not .Standard}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}
{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}
{{end}}{{end}}`, "../cmd/wasmgate", "./httpprobe").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, _ := filepath.Abs("..")
	needed := []string{"go.mod", "go.sum", "sdk/go.mod", "deploy/Dockerfile"}
	for _, f := range strings.Fields(string(out)) {
		if rel, err := filepath.Rel(root, f); err == nil && !strings.HasPrefix(rel, "..") {
			needed = append(needed, rel)
		}
	}
	if len(needed) < 50 {
		t.Fatalf("go list named only %d files of the module", len(needed))
	}
	for _, rel := range needed {
		if ignored(rel) {
			t.Errorf(".dockerignore leaves %s out of the build context", rel)
		}
	}
	for _, rel := range []string{".git", "wasmgate", ".wasmgate/local/wasmgate", "bin/wasmgate"} {
		if !ignored(rel) {
			t.Errorf(".dockerignore sends %s to the builder", rel)
		}
	}
}

// dockerignorePattern turns a .dockerignore line into a regular expression
// over slash-separated paths relative to the context.
func dockerignorePattern(p string) *regexp.Regexp {
	p = strings.TrimPrefix(strings.TrimSuffix(p, "/"), "/")
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case strings.HasPrefix(p[i:], "**/"):
			b.WriteString("(.*/)?")
			i += 2
		case strings.HasPrefix(p[i:], "**"):
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// TestDockerBuild builds the image and runs `wasmgate version` in it. It
// needs a Docker daemon and the network (base images), so it runs only
// with WASMGATE_TEST_DOCKER=1.
func TestDockerBuild(t *testing.T) {
	if os.Getenv("WASMGATE_TEST_DOCKER") != "1" {
		t.Skip("set WASMGATE_TEST_DOCKER=1 to build the image (needs a Docker daemon and the network)")
	}
	if err := exec.Command("docker", "info").Run(); err != nil {
		t.Skipf("no Docker daemon: %v", err)
	}
	tag := "wasmgate:deploy-test"
	build := exec.Command("docker", "build", "-f", "deploy/Dockerfile", "-t", tag, ".")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, lastLines(out, 20))
	}
	out, err := exec.Command("docker", "run", "--rm", tag, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "wasmgate ") {
		t.Fatalf("docker run %s version: %v\n%s", tag, err, out)
	}
	out, err = exec.Command("docker", "run", "--rm", "--entrypoint", "/usr/local/bin/wasmgate", tag,
		"plugin", "inspect", pluginDir+"/telemetry.wasm").CombinedOutput()
	if err != nil {
		t.Fatalf("the image's telemetry plugin: %v\n%s", err, lastLines(out, 5))
	}
}
