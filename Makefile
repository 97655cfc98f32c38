# golcn: the two commands a fresh clone needs are `make demo` and `make test`.
GO ?= go
GOFLAGS ?=
TEST_TIMEOUT ?= 20m

.PHONY: all build demo test vet fmt-check tidy-check txmanager clean

all: build

build:
	$(GO) build ./...

## demo: run the order/stock/account demo on embedded defaults (no MariaDB or Redis needed)
demo:
	$(GO) run ./cmd/lcndemo $(DEMO_ARGS)

## test: gofmt and vet checks, then every test with the race detector.
## Integration tests start private mariadbd/redis-server instances; they skip
## loudly when the binaries are missing, and fail instead with LCN_REQUIRE_INTEGRATION=1.
test: fmt-check vet
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

tidy-check:
	$(GO) mod tidy -diff

## txmanager: run a TxManager on embedded defaults (data in ./lcn-data)
txmanager:
	$(GO) run ./cmd/txmanager $(ARGS)

clean:
	rm -rf lcn-data
