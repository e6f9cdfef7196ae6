# Multi-stage build of the one ffrtmp binary; the runtime image carries ffmpeg and
# GStreamer so the same image runs master and workers.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libpq-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY tests ./tests
RUN cargo build --release --locked --bin ffrtmp && strip target/release/ffrtmp

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg gstreamer1.0-tools gstreamer1.0-plugins-base \
      gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly libpq5 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/ffrtmp --create-home ffrtmp
COPY --from=build /src/target/release/ffrtmp /usr/local/bin/ffrtmp
USER ffrtmp
WORKDIR /var/lib/ffrtmp
EXPOSE 8080 9090 9091
ENTRYPOINT ["ffrtmp"]
CMD ["--help"]
