# `make test` is the one command that runs every test and every gate;
# .ci/run installs what they need, then runs it.
GO ?= go
STATICCHECK ?= staticcheck
GOVULNCHECK ?= govulncheck

.PHONY: test vet fmt tidy lint vuln build soak

test: vet tidy lint vuln
	$(GO) test -race -timeout 20m ./...
	cd sdk && $(GO) test -timeout 10m ./...

vet: fmt
	$(GO) vet ./...
	cd sdk && $(GO) vet ./...

# gofmt over the files git tracks. Without git, or outside a clone, there
# is no list to check, and that is a failure, not a pass.
fmt:
	@command -v git >/dev/null 2>&1 || { echo "gofmt: git is not installed; it lists the files to check (.ci/run installs it)"; exit 1; }
	@files=$$(git ls-files '*.go') || { echo "gofmt: git ls-files failed: not a clone?"; exit 1; }; \
	test -n "$$files" || { echo "gofmt: git ls-files lists no Go file"; exit 1; }; \
	out=$$(gofmt -l $$files) || exit 1; \
	test -z "$$out" || { echo "$$out"; echo "gofmt: the files above need formatting"; exit 1; }

# go.mod and go.sum are what `go mod tidy` makes of the imports.
tidy:
	$(GO) mod tidy -diff
	cd sdk && $(GO) mod tidy -diff

# staticcheck, at the version .ci/run installs, with no finding.
lint:
	$(STATICCHECK) ./...

# govulncheck over the module. Every vulnerability it reports must be
# explained in VULNERABILITIES.md, by its ID. It needs its database
# (vuln.go.dev); where that cannot be reached the gate says so and passes,
# since nothing was checked (see VULNERABILITIES.md).
vuln:
	@out=$$($(GOVULNCHECK) ./... 2>&1); status=$$?; \
	if [ $$status -eq 0 ]; then echo "govulncheck: no vulnerability found"; exit 0; fi; \
	if echo "$$out" | grep -q "fetching vulnerabilities"; then \
		echo "govulncheck: NOT CHECKED: the vulnerability database cannot be reached from here:"; \
		echo "$$out" | sed 's/^/    /'; \
		echo "govulncheck: run make vuln where vuln.go.dev is reachable (see VULNERABILITIES.md)"; \
		exit 0; \
	fi; \
	ids=$$(echo "$$out" | grep -o 'GO-[0-9]*-[0-9]*' | sort -u); \
	if [ -z "$$ids" ]; then echo "$$out"; echo "govulncheck: failed (status $$status)"; exit 1; fi; \
	echo "$$out"; missing=""; \
	for id in $$ids; do grep -q "$$id" VULNERABILITIES.md || missing="$$missing $$id"; done; \
	if [ -n "$$missing" ]; then echo "govulncheck: not explained in VULNERABILITIES.md:$$missing"; exit 1; fi; \
	echo "govulncheck: every finding is explained in VULNERABILITIES.md"

build:
	$(GO) build -o bin/wasmgate ./cmd/wasmgate

# Long soaks, off by default.
soak:
	WASMGATE_SOAK=1 $(GO) test -race -timeout 60m -run Soak ./...
