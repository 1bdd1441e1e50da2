package telemetry

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	syslog "github.com/leodido/go-syslog/v4"
	"github.com/leodido/go-syslog/v4/octetcounting"
	"github.com/leodido/go-syslog/v4/rfc5424"

	"github.com/wasmgate/wasmgate/config"
)

// FuzzOctetCounted frames messages built from arbitrary bodies and host
// names the way the TCP and TLS syslog sinks do, and reads the stream back
// with an independent octet-counting parser: every message must come back
// whole, in order, with its body intact.
func FuzzOctetCounted(f *testing.F) {
	f.Add([]byte(`{"kind":"access"}`), []byte("CEF:0|a|b|1|x|y|3|k=v\\=w"), "proxy-1")
	f.Add([]byte("line\nbreak"), []byte(""), "-")
	f.Add([]byte("12 <13>1 - - - - - - nested frame"), []byte{0xff, 0xfe, '"', ']'}, "h")
	f.Fuzz(func(t *testing.T, body1, body2 []byte, host string) {
		if host == "" || len(host) > 255 || strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r > '~' }) {
			host = "-"
		}
		w, err := newSyslogWriter(&config.SyslogSink{Network: "tcp", Address: "127.0.0.1:1"}, host)
		if err != nil {
			t.Fatal(err)
		}
		var stream []byte
		var want []string
		for _, body := range [][]byte{body1, body2} {
			r := &Record{Kind: KindEvent, Time: sampleTime}
			msg, err := w.message(r, body)
			if err != nil {
				t.Fatalf("message(%q): %v", body, err)
			}
			stream = appendOctetCounted(stream, msg)
			want = append(want, string(bytes.ToValidUTF8(body, []byte("\uFFFD"))))
		}
		var got []*rfc5424.SyslogMessage
		p := octetcounting.NewParser(syslog.WithListener(func(res *syslog.Result) {
			if res.Error != nil {
				t.Fatalf("parsing %q: %v", stream, res.Error)
			}
			got = append(got, res.Message.(*rfc5424.SyslogMessage))
		}), syslog.WithMaxMessageLength(1<<20))
		p.Parse(bytes.NewReader(stream))
		if len(got) != len(want) {
			t.Fatalf("parsed %d messages from %q, want %d", len(got), stream, len(want))
		}
		for i, m := range got {
			body := ""
			if m.Message != nil {
				body = *m.Message
			}
			if body != want[i] || !utf8.ValidString(body) {
				t.Errorf("message %d body %q, want %q", i, body, want[i])
			}
			gotHost := "-"
			if m.Hostname != nil {
				gotHost = *m.Hostname
			}
			if gotHost != host {
				t.Errorf("message %d host %q, want %q", i, gotHost, host)
			}
			if *m.MsgID != "event" || *m.Priority != 16*8+6 {
				t.Errorf("message %d msgid %q priority %d", i, *m.MsgID, *m.Priority)
			}
		}
	})
}
