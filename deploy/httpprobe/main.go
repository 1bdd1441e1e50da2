// Command httpprobe is the health check of the container image, which has
// no shell, curl or wget: it sends one GET and exits 0 when the answer is
// 2xx, 1 otherwise, with the status and the start of the body on stderr.
//
//	httpprobe [-timeout 2s] http://127.0.0.1:9901/ready
//
// It is built beside wasmgate by deploy/Dockerfile; Kubernetes does not need
// it (its httpGet probes speak HTTP themselves).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	timeout := flag.Duration("timeout", 2*time.Second, "bound on the whole request")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: httpprobe [-timeout 2s] URL")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := probe(flag.Arg(0), *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "httpprobe:", err)
		os.Exit(1)
	}
}

// probe GETs url and returns nil for a 2xx answer.
func probe(url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, body)
	}
	return nil
}
