# Redwire container image: a release build on Debian bookworm.
# The image includes redis-server so that the embedded default works with a plain
# `docker run`; docker-compose.yml points Redwire at a separate Redis instead.
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY bench/redwire-bench bench/redwire-bench
RUN cargo build --release --locked --bin redwire

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/redwire --create-home redwire
COPY --from=build /src/target/release/redwire /usr/local/bin/redwire
USER redwire
WORKDIR /var/lib/redwire
# Listening beyond loopback needs an auth file (mount it and set
# REDWIRE_AUTH_FILE, docs/AUTH.md) or REDWIRE_INSECURE=true on a trusted network.
ENV REDWIRE_LISTEN=0.0.0.0:50051 \
    REDWIRE_DATA_DIR=/var/lib/redwire/data
EXPOSE 50051
# Ready when Redis answers and Redwire is not shutting down: `redwire probe` asks
# the admin listener's /readyz (127.0.0.1:9464 inside the container).
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/redwire", "probe"]
ENTRYPOINT ["/usr/local/bin/redwire"]
