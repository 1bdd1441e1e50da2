// Command linefilter is a network (L4) filter: on a TCP listener it reads
// a line protocol (Redis inline commands, SMTP, memcached text, ...) as
// the client sends it, and closes the connection before a line whose
// first word is denied reaches the upstream. A line split across reads
// is held until its end arrives.
//
//	wasmgate plugin build sdk/examples/linefilter
//
// and on a listener:
//
//	listeners:
//	- name: redis
//	  address: 127.0.0.1:6380
//	  tcp_proxy: {cluster: redis, filters: [{plugin: linefilter}]}
//	plugins:
//	- name: linefilter
//	  file: sdk/examples/linefilter/linefilter.wasm
//	  config: {"deny": ["FLUSHALL", "CONFIG", "DEBUG"]}
package main

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/wasmgate/wasmgate/sdk"
)

type config struct {
	// Deny lists the first words (case-insensitive) of the lines that
	// close the connection.
	Deny []string `json:"deny"`
}

type lineFilter struct {
	sdk.BaseFilter
	deny                map[string]bool
	connections, denied sdk.Counter
}

func init() {
	sdk.Register(func(raw []byte) (sdk.Filter, error) {
		var c config
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &c); err != nil {
				return nil, err
			}
		}
		f := &lineFilter{deny: map[string]bool{}}
		for _, w := range c.Deny {
			f.deny[strings.ToUpper(w)] = true
		}
		var err error
		if f.connections, err = sdk.NewCounter("linefilter.connections"); err != nil {
			return nil, err
		}
		if f.denied, err = sdk.NewCounter("linefilter.denied"); err != nil {
			return nil, err
		}
		return f, nil
	})
}

// Callbacks: no HTTP callback does anything.
func (f *lineFilter) Callbacks() sdk.Callbacks { return 0 }

func (f *lineFilter) OnNewConnection(c *sdk.Conn) sdk.Action {
	f.connections.Inc()
	return sdk.Continue
}

func (f *lineFilter) OnDownstreamData(c *sdk.Conn, end bool) sdk.Action {
	b, err := c.Downstream()
	if err != nil || len(b) == 0 {
		return sdk.Continue
	}
	// Hold the bytes while their last line has not ended (unless the
	// client has): the next ones are appended, and every line is checked
	// once whole.
	if !end && b[len(b)-1] != '\n' {
		return sdk.Pause
	}
	for line := range bytes.Lines(b) {
		word, _, _ := bytes.Cut(bytes.TrimSpace(line), []byte(" "))
		if f.deny[strings.ToUpper(string(word))] {
			f.denied.Inc()
			peer, _ := sdk.PropertyString("source", "address")
			sdk.LogWarnf("closing the connection from %s: %q is denied", peer, word)
			c.Close()
			return sdk.Pause
		}
	}
	return sdk.Continue
}

func (f *lineFilter) OnUpstreamData(*sdk.Conn, bool) sdk.Action { return sdk.Continue }

func (f *lineFilter) OnConnectionClose(*sdk.Conn, sdk.Peer) {}

func main() {}
