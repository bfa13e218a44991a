# The three binaries (mock-api, seed, loadgen) in one image; each compose
# service picks its binary with `command`.
#
# The builder is pinned to the runtime's Debian release: binaries built
# against a newer glibc do not start on an older one.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace \
    && mkdir /out \
    && cp target/release/mock-api target/release/seed target/release/loadgen /out/

FROM debian:bookworm-slim
# curl serves the compose healthcheck.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --create-home --home-dir /data cooly
COPY --from=builder /out/ /usr/local/bin/
USER cooly
WORKDIR /data
# Inside a container the API must listen on every interface to be reachable
# through the published port; compose publishes it on the host's loopback only.
ENV BIND=0.0.0.0:5001
EXPOSE 5001
CMD ["mock-api"]
