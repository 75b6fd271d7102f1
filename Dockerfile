# herald: one static binary; the role is the command (nats, dispatcher,
# gateway, serve). docker-compose.yml runs the cluster topology with it.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/herald ./cmd/herald

FROM debian:bookworm-slim
RUN useradd --system --home /data herald && mkdir -p /data && chown herald /data
COPY --from=build /out/herald /usr/local/bin/herald
USER herald
WORKDIR /data
ENTRYPOINT ["herald"]
CMD ["serve", "--dev"]
