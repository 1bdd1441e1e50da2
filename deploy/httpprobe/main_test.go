package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ready":
			_, _ = w.Write([]byte("ready\n"))
		case "/slow":
			time.Sleep(200 * time.Millisecond)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("draining\n"))
		}
	}))
	defer srv.Close()
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/ready", true},
		{"/draining", false},
		{"/slow", false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			err := probe(srv.URL+tc.path, 100*time.Millisecond)
			if (err == nil) != tc.ok {
				t.Fatalf("probe(%s) = %v, want ok=%v", tc.path, err, tc.ok)
			}
		})
	}
	if err := probe("http://127.0.0.1:1/ready", time.Second); err == nil {
		t.Fatal("probe of a closed port succeeded")
	}
}
