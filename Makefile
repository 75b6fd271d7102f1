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
	$(GO) test ./wire -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME)
	$(GO) test ./gateway -run '^$$' -fuzz FuzzParseWSHeader -fuzztime $(FUZZTIME)
	$(GO) test ./gateway -run '^$$' -fuzz FuzzDeviceSession -fuzztime $(FUZZTIME)
	$(GO) test ./dispatcher -run '^$$' -fuzz FuzzParsePush -fuzztime $(FUZZTIME)
	$(GO) test ./dispatcher -run '^$$' -fuzz FuzzAPI -fuzztime $(FUZZTIME)
	$(GO) test ./config -run '^$$' -fuzz FuzzValidName -fuzztime $(FUZZTIME)
	$(GO) test ./offline -run '^$$' -fuzz FuzzParseLeaderGet -fuzztime $(FUZZTIME)
	$(GO) test ./offline -run '^$$' -fuzz FuzzPlainPubAck -fuzztime $(FUZZTIME)
	$(GO) test ./offline -run '^$$' -fuzz FuzzParseRecall -fuzztime $(FUZZTIME)
	$(GO) test ./client -run '^$$' -fuzz FuzzWSStream -fuzztime $(FUZZTIME)
	$(GO) test ./client -run '^$$' -fuzz FuzzClientSession -fuzztime $(FUZZTIME)
	$(GO) test ./token -run '^$$' -fuzz FuzzVerify -fuzztime $(FUZZTIME)

# The cluster topology as local processes (3 NATS, 2 dispatchers, 2 gateways).
cluster: build
	scripts/cluster.sh start

cluster-stop:
	scripts/cluster.sh stop

clean:
	rm -rf bin
