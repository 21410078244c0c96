# concord-bootstrap: a multi-stage build (compile in the Rust image, run on slim Debian as a non-root user).
# Build from the repository root: docker build -f compose/docker/bootstrap.Dockerfile .
FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p concord-bootstrap --bin concord-bootstrap

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /data --create-home concord
COPY --from=build /src/target/release/concord-bootstrap /usr/local/bin/concord-bootstrap
USER concord
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/concord-bootstrap"]
