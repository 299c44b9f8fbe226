# The two commands a developer needs: `go run ./cmd/herd serve` runs the
# hub, `make test` runs every test (and installs what the tests need).

GO ?= go

.PHONY: test test-memory build vet bench bench-quick fuzz compat compat-postgres compat-cluster ui ui-screenshots chromium postgresql haproxy mosquitto test-postgres

## test: every test: vet, the Go tests with -race (the store conformance suite
## on SQLite and on a throwaway PostgreSQL), the hub-level suites again on
## PostgreSQL, the official Azure SDK suite on both stores and the
## dashboard's browser suite
test: vet postgresql haproxy mosquitto
	$(GO) test -race -count=1 ./...
	$(MAKE) test-memory
	$(MAKE) test-postgres
	$(MAKE) compat
	$(MAKE) compat-postgres
	$(MAKE) compat-cluster
	$(MAKE) ui

## test-memory: the tests of memory figures, which the race detector's
## builds change (their stacks and frames are larger), without -race
test-memory:
	$(GO) test -count=1 -run 'TestIdleConnectionsKeepSmallStacks' ./internal/hub/

## test-postgres: the suites that run whole hubs (job engine, REST API, hub,
## dashboard, CLI and the kill -9 crash tests) with PostgreSQL as their store
PG_SUITES = ./internal/job/... ./internal/config/... ./internal/httpapi/... ./internal/hub/... ./internal/ui/... ./cmd/herd/...
test-postgres: postgresql
	HERD_TEST_STORE=postgres $(GO) test -race -count=1 $(PG_SUITES)

## compat: the official Azure IoT Node.js SDKs (compat/node) against a real
## `herd serve` on port 443; needs Node 20 and npm, takes a machine-wide lock
compat:
	cd compat/node && npm ci --no-audit --no-fund
	GO="$(GO)" node compat/node/run.mjs

## compat-postgres: the same suite with the hub on a throwaway PostgreSQL
compat-postgres: postgresql
	cd compat/node && npm ci --no-audit --no-fund
	GO="$(GO)" HERD_COMPAT_STORE=postgres node compat/node/run.mjs

## compat-cluster: the same suite against a 3-node cluster (PostgreSQL, a
## throwaway NATS server): the service SDK on node-0's 443, MQTT devices on
## node-1 and node-2 behind a balancer on 8883
compat-cluster: postgresql
	cd compat/node && npm ci --no-audit --no-fund
	GO="$(GO)" HERD_COMPAT_CLUSTER=1 node compat/node/run.mjs

## postgresql: installs Debian's postgresql when no PostgreSQL server binaries
## are found and we are root (apt-get); otherwise it stops with what to
## install. The tests run their own throwaway clusters
## (internal/store/pgtest): no server needs to be running
postgresql:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's postgresql for the PostgreSQL store tests"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; \
	  else \
	    echo "the PostgreSQL store tests need PostgreSQL's server binaries (initdb, postgres): run \`sudo apt-get install postgresql\`" >&2; \
	    exit 1; \
	  fi; \
	fi

# debian_package installs Debian's package $(1), whose program is $(2) (on
# the PATH or in /usr/sbin), when it is missing and we are root (apt-get);
# otherwise it stops with what to install. $(3) says what needs it.
define debian_package
	@if ! command -v $(2) >/dev/null 2>&1 && [ ! -x /usr/sbin/$(2) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's $(1) for $(3)"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(1); \
	  else \
	    echo "Debian's $(1) is needed for $(3): run \`sudo apt-get install $(1)\`" >&2; \
	    exit 1; \
	  fi; \
	fi
endef

## haproxy: installs Debian's haproxy when it is missing (see debian_package):
## the cluster tests run docs/haproxy.cfg in front of their nodes (the
## binary only; no service is started)
haproxy:
	$(call debian_package,haproxy,haproxy,the cluster tests)

## mosquitto: installs Debian's mosquitto when it is missing (see
## debian_package): the benchmark harness measures Herd against it (go run
## ./bench --peers), and its test runs that at a tiny scale (the binary
## only; the harness starts it on a loopback port itself)
mosquitto:
	$(call debian_package,mosquitto,mosquitto,the benchmark harness's peer test)

## ui: the dashboard's end-to-end suite (compat/ui): Debian's Chromium, headless,
## driven by playwright-core against a real `herd serve` on free ports with
## simulated devices; screenshots in compat/ui/.run/screenshots
CHROMIUM ?= /usr/bin/chromium
ui: chromium
	cd compat/ui && npm ci --no-audit --no-fund
	GO="$(GO)" HERD_UI_CHROMIUM="$(CHROMIUM)" node compat/ui/run.mjs

## ui-screenshots: the same, writing the screenshots to docs/dashboard/
ui-screenshots:
	HERD_UI_SCREENSHOTS=docs/dashboard HERD_UI_DEVICES=2000 $(MAKE) ui

## chromium: installs Debian's chromium when it is missing and we are root
## (apt-get); otherwise a missing browser fails the suite, it never skips
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the dashboard tests"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else \
	    echo "the dashboard tests need Chromium at $(CHROMIUM): run \`sudo apt-get install chromium\` (or make CHROMIUM=/path/to/chromium)" >&2; \
	    exit 1; \
	  fi; \
	fi

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
