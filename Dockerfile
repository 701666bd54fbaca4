# syntax=docker/dockerfile:1
# Portcullis for users with a registry: a Debian 12 build stage, a slim Debian 12 runtime with
# only the shared libraries the binary uses. (The tests build the image offline with
# scripts/image.sh instead: FROM scratch, the same binary and libraries.)
#
#   docker build -t registry.example/portcullis:dev .
FROM debian:12 AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev \
      libssl-dev libyaml-cpp-dev libspdlog-dev libcli11-dev libnftnl-dev libmnl-dev catch2 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    && cmake --build /build --target portcullis \
    && strip /build/portcullis

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libssl3 libyaml-cpp0.7 libspdlog1.10 libfmt9 libnftnl11 libmnl0 \
      libboost-json1.81.0 libboost-url1.81.0 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1337 portcullis && useradd --uid 1337 --gid 1337 --no-create-home portcullis
COPY --from=build /build/portcullis /usr/local/bin/portcullis
# The sidecar runs as 1337 (set again by the injected securityContext); the firewall init
# container and the host gateways run as root with only NET_ADMIN.
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["version"]
