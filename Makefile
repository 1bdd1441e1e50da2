# `make test` is the one command that runs every test; .ci/run runs it.
GO ?= go

.PHONY: test vet build soak

test: vet
	$(GO) test -race -timeout 20m ./...
	cd sdk && $(GO) test -timeout 10m ./...

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt: the files above need formatting"; exit 1)
	$(GO) vet ./...
	cd sdk && $(GO) vet ./...

build:
	$(GO) build -o bin/wasmgate ./cmd/wasmgate

# Long soaks, off by default.
soak:
	WASMGATE_SOAK=1 $(GO) test -race -timeout 60m -run Soak ./...
