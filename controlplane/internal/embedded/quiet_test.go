package embedded

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestQuietCoreDemotesOnlyWhatIsHarmless(t *testing.T) {
	for _, level := range []zapcore.Level{zapcore.InfoLevel, zapcore.DebugLevel} {
		core, logs := observer.New(level)
		lg := zap.New(quietCore{core})
		closed := fmt.Errorf("accept tcp 127.0.0.1:1: %w", net.ErrClosed)
		lg.Error("failed to update storage version", zap.String("cluster-version", "3.7.0"))
		lg.Error("setting up serving from embedded etcd failed.", zap.Error(closed))
		lg.Error("setting up serving from embedded etcd failed.", zap.Error(http.ErrServerClosed))
		lg.Warn("stopped insecure grpc server due to error", zap.Error(closed))
		lg.Error("setting up serving from embedded etcd failed.", zap.Error(errors.New("address already in use")))
		lg.Error("something else failed")

		var errs, debugs int
		for _, e := range logs.All() {
			switch e.Level {
			case zapcore.ErrorLevel:
				errs++
			case zapcore.DebugLevel:
				debugs++
			}
		}
		if errs != 2 {
			t.Errorf("at %s: %d errors logged, want the 2 real ones", level, errs)
		}
		if want := map[zapcore.Level]int{zapcore.InfoLevel: 0, zapcore.DebugLevel: 4}[level]; debugs != want {
			t.Errorf("at %s: %d entries demoted to debug, want %d", level, debugs, want)
		}
	}
}
