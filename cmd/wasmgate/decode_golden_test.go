package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/controlplane/api"
)

var update = flag.Bool("update", false, "rewrite the .golden files in testdata/errors")

const goldenToken = "a-test-token-of-32-characters-xx"

// TestOneDecoderGolden feeds each bad document of testdata/errors through
// `wasmgate validate`, the control plane's API (POST /v1/validate over
// HTTP, on a control plane with its embedded etcd) and `wasmgate ctl
// apply` against that API, and expects the same problems, in the same
// words, from all three: those of the document's .golden file.
// Regenerate the files with go test ./cmd/wasmgate -run
// TestOneDecoderGolden -update, and review the diff.
func TestOneDecoderGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "errors", "*"))
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	for _, f := range files {
		if !strings.HasSuffix(f, ".golden") {
			docs = append(docs, f)
		}
	}
	if len(docs) == 0 {
		t.Fatal("no documents in testdata/errors")
	}

	dir := t.TempDir()
	p := startProc(t, "controlplane", "--data-dir", filepath.Join(dir, "cp"), "--listen", "127.0.0.1:0",
		"--etcd-listen-client", "127.0.0.1:0", "--etcd-listen-peer", "127.0.0.1:0", "--admin-token", goldenToken, "--log-format", "json")
	re := regexp.MustCompile(`(?m)^\{.*"msg":"admin API serving".*"url":"([^"]+)".*\}$`)
	url := p.stderr.wait(t, p, re, 20*time.Second)[1]

	for _, doc := range docs {
		t.Run(filepath.Base(doc), func(t *testing.T) {
			golden := strings.TrimSuffix(doc, filepath.Ext(doc)) + ".golden"

			validate, err := runCLI(t, "validate", "-c", doc)
			if err == nil || exitCode(err) != exitInvalid {
				t.Fatalf("validate: exit status %d (%v), want %d\n%s", exitCode(err), err, exitInvalid, validate)
			}
			if *update {
				if err := os.WriteFile(golden, []byte(validate), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if validate != string(want) {
				t.Errorf("validate printed:\n%s\nwant (%s):\n%s", validate, golden, want)
			}

			if got := postValidate(t, url, doc); got != string(want) {
				t.Errorf("the API answered:\n%s\nwant (%s):\n%s", got, golden, want)
			}

			ctl, err := runCLI(t, "ctl", "--server", url, "--token", goldenToken, "apply", "-f", doc)
			if err == nil || exitCode(err) != 4 || !strings.HasPrefix(err.Error(), "invalid: ") {
				t.Errorf("ctl apply: exit status %d (%v), want 4 and invalid: ...", exitCode(err), err)
			}
			if ctl != string(want) {
				t.Errorf("ctl apply printed:\n%s\nwant (%s):\n%s", ctl, golden, want)
			}
		})
	}

	// The files of a directory are sent merged; a problem is still named
	// by its file and line.
	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		a := filepath.Join(dir, "a.yaml")
		b := filepath.Join(dir, "b.yaml")
		if err := os.WriteFile(a, []byte("listeners:\n  - name: main\n    address: \"127.0.0.1:8080\"\nclusters:\n  - name: api\n    endpoints: [{address: \"127.0.0.1:9001\"}]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(b, []byte("clusters:\n  - name: static\n    endpoints: [{address: \"127.0.0.1:9002\"}]\nvirtual_hosts:\n  - name: web\n    domains: [\"*\"]\n    routes:\n      - cluster: api\n      - cluster: nowhere\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := runCLI(t, "ctl", "--server", url, "--token", goldenToken, "apply", "-f", dir)
		if want := b + `:9: virtual_hosts[0].routes[1].cluster: unknown cluster "nowhere"` + "\n"; out != want || exitCode(err) != 4 {
			t.Errorf("ctl apply -f DIR: exit status %d, printed:\n%s\nwant:\n%s", exitCode(err), out, want)
		}
		if err := os.WriteFile(a, []byte("listeners:\n  - name: main\n    adress: \"127.0.0.1:8080\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err = runCLI(t, "ctl", "--server", url, "--token", goldenToken, "apply", "-f", dir)
		if want := a + `:3: listeners[0].adress: unknown field (did you mean "address"?)` + "\n"; out != want || exitCode(err) != 4 {
			t.Errorf("ctl apply -f DIR with a misspelt field: exit status %d, printed:\n%s\nwant:\n%s", exitCode(err), out, want)
		}
	})
}

// postValidate sends a document to POST /v1/validate under its file name
// and returns the problems of the answer, one a line.
func postValidate(t *testing.T, url, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, url+"/v1/validate", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+goldenToken)
	req.Header.Set("Content-Type", "application/yaml")
	req.Header.Set(api.DocumentHeader, file)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("POST /v1/validate: HTTP %d, want 422", resp.StatusCode)
	}
	var body api.ErrorBody
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, fe := range body.Errors {
		b.WriteString(fe.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// TestValidateChecksFiles: `validate` refuses what `run` would refuse
// when it loads the files a configuration names, with every other
// problem.
func TestValidateChecksFiles(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	file := filepath.Join(dir, "c.yaml")
	doc := `listeners:
  - name: main
    address: "127.0.0.1:8443"
    tls:
      certificates:
        - cert_file: ` + missing + `
          key_file: ` + missing + `
clusters:
  - name: api
    endpoints: [{address: "127.0.0.1:9001"}]
virtual_hosts:
  - name: web
    domains: ["*"]
    routes: [{cluster: nowhere}]
plugins:
  - name: p
    file: ` + filepath.Join(dir, "p.wasm") + `
`
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "validate", "-c", file)
	want := file + ":6: listeners[0].tls.certificates[0].cert_file: " + missing + ": no such file\n" +
		file + ":7: listeners[0].tls.certificates[0].key_file: " + missing + ": no such file\n" +
		file + `:14: virtual_hosts[0].routes[0].cluster: unknown cluster "nowhere"` + "\n" +
		file + ":17: plugins[0].file: " + filepath.Join(dir, "p.wasm") + ": no such file\n"
	if exitCode(err) != exitInvalid || out != want {
		t.Errorf("exit status %d, printed:\n%s\nwant:\n%s", exitCode(err), out, want)
	}
}
