# concord-relay: a multi-stage build (compile in the Rust image, run on slim Debian as a non-root user).
# Build from the repository root: docker build -f compose/docker/relay.Dockerfile .
FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p concord-relay --bin concord-relay

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /data --create-home concord
COPY --from=build /src/target/release/concord-relay /usr/local/bin/concord-relay
USER concord
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/concord-relay"]
