package sdk

import (
	"fmt"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// LogLevel is the severity of a log message.
type LogLevel = abi.LogLevel

// Log levels, from the most to the least verbose.
const (
	LevelTrace    = abi.LogLevelTrace
	LevelDebug    = abi.LogLevelDebug
	LevelInfo     = abi.LogLevelInfo
	LevelWarn     = abi.LogLevelWarn
	LevelError    = abi.LogLevelError
	LevelCritical = abi.LogLevelCritical
)

// minLevel is the host's level, read at each configuration; messages
// below it are not formatted.
var minLevel = abi.LogLevelTrace

func refreshLogLevel() {
	if l, st := hostLogLevel(); st == abi.StatusOK {
		minLevel = l
	}
}

// Log writes msg to the host's log at level.
func Log(level LogLevel, msg string) {
	if level >= minLevel {
		hostLog(level, msg)
	}
}

func logf(level LogLevel, format string, args ...any) {
	if level >= minLevel {
		hostLog(level, fmt.Sprintf(format, args...))
	}
}

// LogTracef formats and logs a message at trace level.
func LogTracef(format string, args ...any) { logf(LevelTrace, format, args...) }

// LogDebugf formats and logs a message at debug level.
func LogDebugf(format string, args ...any) { logf(LevelDebug, format, args...) }

// LogInfof formats and logs a message at info level.
func LogInfof(format string, args ...any) { logf(LevelInfo, format, args...) }

// LogWarnf formats and logs a message at warn level.
func LogWarnf(format string, args ...any) { logf(LevelWarn, format, args...) }

// LogErrorf formats and logs a message at error level.
func LogErrorf(format string, args ...any) { logf(LevelError, format, args...) }

// LogCriticalf formats and logs a message at critical level.
func LogCriticalf(format string, args ...any) { logf(LevelCritical, format, args...) }
