# The two commands a developer needs: `go run ./cmd/herd serve` runs the
# hub, `make test` runs every test (and installs what the tests need).

GO ?= go

.PHONY: test build vet bench bench-quick fuzz compat

## test: every test: vet, the Go tests with -race, and the official Azure SDK suite
test: vet
	$(GO) test -race -count=1 ./...
	$(MAKE) compat

## compat: the official Azure IoT Node.js SDKs (compat/node) against a real
## `herd serve` on port 443; needs Node 20 and npm, takes a machine-wide lock
compat:
	cd compat/node && npm ci --no-audit --no-fund
	GO="$(GO)" node compat/node/run.mjs

## vet: go.mod and go.sum as `go mod tidy` leaves them, and go vet
vet:
	$(GO) mod download
	$(GO) mod tidy -diff
	$(GO) vet ./...

## build: the herd binary in ./bin
build:
	CGO_ENABLED=0 $(GO) build -o bin/herd ./cmd/herd

## bench: measure the performance budget on this machine (go run ./bench) and
## print it as a Markdown table; builds 1M-device fleets once into
## $HERD_BENCH_DIR (default /tmp/herd-bench); holds the machine-wide benchmark lock
bench:
	flock /tmp/herd-bench.lock $(GO) run ./bench

## bench-quick: the same at smaller scale, in under two minutes
bench-quick:
	flock /tmp/herd-bench.lock $(GO) run ./bench --quick
