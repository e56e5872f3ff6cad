# Build, test and run the IoT Hub module-twin tools and their local emulator.
GO       ?= go
BIN      := bin
CMDS     := create-module update-module-twin receive-twin-patch iothub-emulator
PKG      := github.com/moduletwin/iothub-module-twin
NODE_DIR := interop/node
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
# -buildvcs=auto records the commit even where GOFLAGS turns it off.
BUILD_FLAGS := -trimpath -buildvcs=auto -ldflags "-X $(PKG)/internal/buildinfo.BuildVersion=$(VERSION)"

.PHONY: all build install test test-go test-interop interop-deps lint demo bench clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build $(BUILD_FLAGS) -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

install:
	$(GO) install $(BUILD_FLAGS) $(addprefix ./cmd/,$(CMDS))

# Everything: unit tests, end-to-end scripts against the emulator, and
# Microsoft's Node.js SDKs against the emulator.
test: test-go test-interop

test-go:
	$(GO) test -race -count=1 ./...

interop-deps:
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error

# Microsoft's Node.js SDKs only talk to ports 443 and 8883, so the emulator
# must listen there. The test runs in a private network namespace, whose
# loopback has those ports free whatever the machine runs; without root it
# is also a private user namespace, where binding 443 needs no privilege.
test-interop: interop-deps
	$(GO) test -c -tags interop -o $(BIN)/interop.test ./interop
	cd interop && unshare $$([ "$$(id -u)" = 0 ] || echo --user --map-root-user) --net \
		sh -c 'ip link set lo up && ../$(BIN)/interop.test -test.v -test.count=1'

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags interop ./interop
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

STATICCHECK_VERSION ?= v0.8.2

demo: build
	./scripts/demo.sh $(BIN)

bench: build
	./scripts/bench.sh $(BIN)

clean:
	rm -rf $(BIN)
