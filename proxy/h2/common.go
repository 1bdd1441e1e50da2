package h2

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
