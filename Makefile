# golcn: the two commands a fresh clone needs are `make demo` and `make test`.
GO ?= go
GOFLAGS ?=
TEST_TIMEOUT ?= 20m

.PHONY: all build demo test unit fuzz vet fmt-check tidy-check txmanager lcnctl ui-test bench chaos chaos-ci clean

all: build

build:
	$(GO) build ./...

## demo: run the order/stock/account demo on embedded defaults (no MariaDB or Redis needed)
demo:
	$(GO) run ./cmd/lcndemo $(DEMO_ARGS)

## test: gofmt and vet checks, every test with the race detector (unit), then
## the fault suite's CI tier (chaos-ci). Integration tests start private
## mariadbd/redis-server instances; they skip loudly when the binaries are
## missing, and fail instead with LCN_REQUIRE_INTEGRATION=1.
test: unit chaos-ci

## unit: gofmt and vet checks, then every test with the race detector
## (minutes; the fault suite's scenarios are not included).
unit: fmt-check vet
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(GO) test -race -count=1 -tags failpoint ./internal/failpoint/

## fuzz: run each fuzz target for FUZZTIME (one target per go test call).
## Seed corpora also run in every plain `make test`.
FUZZTIME ?= 30s
FUZZ_TARGETS = FuzzDecodeMessage:./internal/wire FuzzGroupHeader:./internal/gid \
	FuzzConfig:./config FuzzCoordinatorFSM:./txmanager
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		name=$${t%%:*}; pkg=$${t#*:}; \
		echo "fuzz $$name ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg; \
	done

vet:
	$(GO) vet ./...
	$(GO) vet -tags $(CHAOS_TAGS) ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

tidy-check:
	$(GO) mod tidy -diff

## txmanager: run a TxManager on embedded defaults (data in ./lcn-data).
## Without credentials it refuses to start: ARGS="--auth-insecure" for development.
txmanager:
	$(GO) run ./cmd/txmanager $(ARGS)

## lcnctl: the operator CLI (ARGS="groups list"; token from LCN_ADMIN_TOKEN_FILE or LCN_ADMIN_TOKEN)
lcnctl:
	$(GO) run ./cmd/lcnctl $(ARGS)

## ui-test: the admin page's unit tests and the headless-chromium browser
## test (also part of `make test`); screenshots go to $(LCN_UI_ARTIFACTS)
LCN_UI_ARTIFACTS ?= $(CURDIR)/ui-artifacts
ui-test:
	LCN_UI_ARTIFACTS=$(LCN_UI_ARTIFACTS) $(GO) test -race -count=1 -v ./txmanager/adminui/... ./internal/uitest/...

## bench: transfer benchmark (xa, lcn and the plain-local-transaction baseline)
## on private MariaDB and Redis; BENCH_ARGS="--quick" for a few seconds
bench:
	$(GO) run ./cmd/lcnbench --json docs/performance.json --svg docs/performance.svg $(BENCH_ARGS)

## chaos-ci: the fault suite's CI figures (build tags chaos and failpoint: the
## product's failpoints are compiled in); chaos: the nightly
## figures (CHAOS_SCALE times more work). Seeds are printed; CHAOS_SEED replays one.
## CHAOS_OUT=dir keeps histories, node logs and dir/figures.txt.
CHAOS_SCALE ?= 10
CHAOS_TAGS = chaos,failpoint
chaos-ci:
	CHAOS_SCALE=1 $(GO) test -race -count=1 -tags $(CHAOS_TAGS) -v -timeout 60m ./chaos/
chaos:
	CHAOS_SCALE=$(CHAOS_SCALE) $(GO) test -race -count=1 -tags $(CHAOS_TAGS) -v -timeout 0 ./chaos/

clean:
	rm -rf lcn-data ui-artifacts
