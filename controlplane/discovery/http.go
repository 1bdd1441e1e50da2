package discovery

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Handler serves watches over HTTP: GET with the query
//
//	service=NAME (repeated)  the services the sidecar calls
//	namespace=NS&self=SVC    its own service, for its policies
//
// answers with a stream of JSON lines, one Update each (the first holds
// everything of interest), and a blank line every Heartbeat while nothing
// changes. It does no authentication of its own: mount it behind the
// API's, and set Authorize to hold a sidecar to its own identity.
type Handler struct {
	Hub *Hub
	// Authorize, when set, may refuse an interest (for example one whose
	// namespace and service are not those of the caller's certificate);
	// its error is sent as 403.
	Authorize func(r *http.Request, in Interest) error
	// Heartbeat is the interval of blank lines on an idle stream (zero:
	// 15 s).
	Heartbeat time.Duration
	// Identify, when set, names the caller of a watch for Hub.Status (a
	// sidecar's SPIFFE ID).
	Identify func(r *http.Request) string
}

var _ http.Handler = (*Handler)(nil)

// wireUpdate is an Update as sent. It keeps Update's fields, in order, so
// that each converts to the other.
type wireUpdate struct {
	Endpoints []*Endpoints `json:"endpoints,omitempty"`
	Policies  *Policies    `json:"policies,omitempty"`
	Watch     string       `json:"watch,omitempty"`
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		h.report(w, r)
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "use GET to watch, POST to report", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	in := Interest{Services: q["service"], Namespace: q.Get("namespace"), Service: q.Get("self")}
	if err := checkInterest(in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if h.Authorize != nil {
		if err := h.Authorize(r, in); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
	}
	flusher, _ := w.(http.Flusher)
	watch := h.Hub.Watch(in)
	defer watch.Close()
	if h.Identify != nil {
		watch.SetPeer(h.Identify(r), r.RemoteAddr)
	} else {
		watch.SetPeer("", r.RemoteAddr)
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		flusher.Flush()
	}
	beat := h.Heartbeat
	if beat <= 0 {
		beat = 15 * time.Second
	}
	enc := json.NewEncoder(w)
	first := true
	for {
		ctx, cancel := context.WithTimeout(r.Context(), beat)
		u, err := watch.Next(ctx)
		cancel()
		switch {
		case r.Context().Err() != nil || errors.Is(err, ErrClosed):
			return
		case errors.Is(err, context.DeadlineExceeded):
			if _, err := io.WriteString(w, "\n"); err != nil {
				return
			}
		case err != nil:
			return
		default:
			if first {
				u.Watch, first = watch.ID(), false
			}
			if err := enc.Encode(wireUpdate(u)); err != nil {
				return
			}
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

// report takes a follower's Report of the watch ?watch=ID: 204, or 404
// when no such watch of the caller's is open.
func (h *Handler) report(w http.ResponseWriter, r *http.Request) {
	var rep Report
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&rep); err != nil {
		http.Error(w, "a report is JSON: "+err.Error(), http.StatusBadRequest)
		return
	}
	identity := ""
	if h.Identify != nil {
		identity = h.Identify(r)
	}
	if err := h.Hub.Report(r.URL.Query().Get("watch"), identity, rep); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func checkInterest(in Interest) error {
	if len(in.Services) == 0 && in.Namespace == "" {
		return errors.New("ask for something: service=NAME (repeated) and/or namespace=NS&self=SERVICE")
	}
	if len(in.Services) > 10000 {
		return fmt.Errorf("service: %d services in one watch; at most 10000", len(in.Services))
	}
	for i, s := range in.Services {
		if s == "" || len(s) > 128 {
			return fmt.Errorf("service[%d]: %q is not a service name", i, s)
		}
	}
	if in.Service != "" && in.Namespace == "" {
		return errors.New("self: needs namespace")
	}
	return nil
}

// Client follows a Handler from a sidecar.
type Client struct {
	// URL is the handler's address.
	URL string
	// HTTP is the client to use (nil: http.DefaultClient). Its Timeout
	// must be zero: a watch is a long request.
	HTTP *http.Client
	// Header is added to every request (the API token).
	Header http.Header
}

// Report tells the handler what became of the updates of the watch id
// (Update.Watch of a stream's first update).
func (c *Client) Report(ctx context.Context, id string, r Report) error {
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL+"?watch="+url.QueryEscape(id), bytes.NewReader(body))
	if err != nil {
		return err
	}
	for k, v := range c.Header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("discovery: report refused (%s): %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// Stream is one watch over HTTP. It reconnects by itself.
type Stream struct {
	c       *Client
	in      Interest
	body    io.ReadCloser
	lines   *bufio.Reader
	backoff time.Duration
}

// Watch returns a stream of the updates of an interest. Nothing is sent
// until the first Next.
func (c *Client) Watch(in Interest) *Stream {
	return &Stream{c: c, in: in}
}

// Report tells the handler what became of the updates of the watch id.
func (s *Stream) Report(ctx context.Context, id string, r Report) error {
	return s.c.Report(ctx, id, r)
}

// Next returns the next update, connecting (again) as needed: after a
// reconnection the first update holds everything of interest again, so
// a caller that replaces what it holds with each service's snapshot
// needs nothing else. It returns only when ctx ends or an update arrives.
func (s *Stream) Next(ctx context.Context) (Update, error) {
	for {
		if s.body == nil {
			if err := s.connect(ctx); err != nil {
				if ctx.Err() != nil {
					return Update{}, ctx.Err()
				}
				var refused *RefusedError
				if errors.As(err, &refused) {
					return Update{}, err
				}
				s.backoff = min(max(2*s.backoff, 50*time.Millisecond), 5*time.Second)
				select {
				case <-ctx.Done():
					return Update{}, ctx.Err()
				case <-time.After(s.backoff):
				}
				continue
			}
		}
		line, err := s.readLine(ctx)
		if err != nil {
			s.Close()
			if ctx.Err() != nil {
				return Update{}, ctx.Err()
			}
			continue
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var u wireUpdate
		if err := json.Unmarshal(line, &u); err != nil {
			s.Close()
			return Update{}, fmt.Errorf("discovery: a bad update from %s: %w", s.c.URL, err)
		}
		s.backoff = 0
		return Update(u), nil
	}
}

// readLine reads one line, giving up when ctx ends.
func (s *Stream) readLine(ctx context.Context) ([]byte, error) {
	type result struct {
		line []byte
		err  error
	}
	done := make(chan result, 1)
	lines := s.lines
	go func() {
		l, err := lines.ReadBytes('\n')
		done <- result{l, err}
	}()
	select {
	case r := <-done:
		return r.line, r.err
	case <-ctx.Done():
		// Closing the body ends the read; the stream connects again on
		// the next call.
		s.Close()
		<-done
		return nil, ctx.Err()
	}
}

func (s *Stream) connect(ctx context.Context) error {
	q := url.Values{}
	for _, name := range s.in.Services {
		q.Add("service", name)
	}
	if s.in.Namespace != "" {
		q.Set("namespace", s.in.Namespace)
	}
	if s.in.Service != "" {
		q.Set("self", s.in.Service)
	}
	u := s.c.URL + "?" + q.Encode()
	// The request lives as long as the stream, not the caller's ctx.
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	for k, vs := range s.c.Header {
		req.Header[k] = vs
	}
	hc := s.c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		err := fmt.Errorf("discovery: %s: %s", resp.Status, bytes.TrimSpace(b))
		if resp.StatusCode >= 400 && resp.StatusCode < 500 {
			return &RefusedError{Status: resp.StatusCode, Err: err}
		}
		return err
	}
	s.body, s.lines = resp.Body, bufio.NewReader(resp.Body)
	return nil
}

// RefusedError is a watch the handler refused (a bad interest, no
// authorization): Next returns it instead of trying again.
type RefusedError struct {
	Status int
	Err    error
}

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

// Close ends the current connection, if any.
func (s *Stream) Close() {
	if s.body != nil {
		s.body.Close()
		s.body, s.lines = nil, nil
	}
}
