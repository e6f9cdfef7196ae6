# Multi-stage build of the one ffrtmp binary; the runtime image carries ffmpeg and
# GStreamer so the same image runs master and workers.
#   docker build -t ffrtmp .                 # CPU image
#   docker build -t ffrtmp:gpu --target gpu .  # same, asking the NVIDIA runtime for NVENC
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libpq-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, in their own layer: a source change rebuilds ffrtmp only.
COPY Cargo.toml Cargo.lock ./
# The SQLite build flags (the query planner stability guarantee) are set here.
COPY .cargo ./.cargo
RUN mkdir -p src tests/e2e assets/ui \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs tests/e2e/main.rs \
 && cargo build --release --locked --bin ffrtmp \
 && rm -rf src tests target/release/.fingerprint/ffrtmp-*
COPY src ./src
COPY migrations ./migrations
COPY assets ./assets
COPY tests ./tests
RUN cargo build --release --locked --bin ffrtmp && strip target/release/ffrtmp

FROM debian:bookworm-slim AS runtime
ARG VERSION=dev
LABEL org.opencontainers.image.title="ffrtmp" \
      org.opencontainers.image.description="Distributed FFmpeg/RTMP transcoding farm: master, worker and CLI in one binary" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/ffrtmp/ffrtmp"
# tini is PID 1: it forwards SIGTERM to ffrtmp and reaps every exited ffmpeg child.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg gstreamer1.0-tools gstreamer1.0-plugins-base \
      gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly libpq5 ca-certificates curl tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/ffrtmp --create-home ffrtmp \
 && printf '#!/bin/sh\nexec curl -fsS -o /dev/null --max-time 2 "${FFRTMP_HEALTH_URL:-http://127.0.0.1:8080/health}"\n' \
      > /usr/local/bin/ffrtmp-healthcheck && chmod 755 /usr/local/bin/ffrtmp-healthcheck
COPY --from=build /src/target/release/ffrtmp /usr/local/bin/ffrtmp
USER ffrtmp
WORKDIR /var/lib/ffrtmp
EXPOSE 8080 9090 9091
# A master answers /health on 8080; a worker sets FFRTMP_HEALTH_URL to its metrics port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["ffrtmp-healthcheck"]
ENTRYPOINT ["/usr/bin/tini", "--", "ffrtmp"]
CMD ["--help"]

# The GPU variant: the NVIDIA container runtime mounts the driver's libraries for these
# capabilities; without `video` a container has no NVENC/NVDEC.
FROM runtime AS gpu
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,video,utility
