# herald — the README's two commands are `make run` and `make test`.

GO      ?= go
BIN     := bin/herald
# Every package has concurrency worth racing; the suite must stay well under
# 15 minutes on 2 cores, and no test may hang: -timeout bounds the whole run.
TESTFLAGS ?= -race -count=1 -timeout 12m

.PHONY: build run test vet fuzz clean cluster cluster-stop

build:
	$(GO) build -o $(BIN) ./cmd/herald

run: build
	./$(BIN) serve --dev

vet:
	$(GO) vet ./...

test: vet
	$(GO) test $(TESTFLAGS) ./...

# Longer fuzzing of the network decoders (the seed corpus runs in `make test`).
FUZZTIME ?= 60s
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

# The cluster topology as local processes (3 NATS, 2 dispatchers, 2 gateways).
cluster: build
	scripts/cluster.sh start

cluster-stop:
	scripts/cluster.sh stop

clean:
	rm -rf bin
