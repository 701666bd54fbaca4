#!/usr/bin/env bash
# Installs everything Portcullis needs to build, test and benchmark, from Debian 12 packages only.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config ccache git
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libssl-dev openssl libspdlog-dev libyaml-cpp-dev libcli11-dev catch2
  libnftnl-dev libmnl-dev nftables iproute2 tcpdump strace
  python3 python3-pytest python3-cryptography python3-yaml curl
  haproxy nginx-light prometheus docker.io apache2-utils busybox-static logrotate
  clang libclang-rt-14-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's packages start services where an init system runs; our tests start their own.
for svc in nginx haproxy prometheus docker; do
  service "$svc" stop >/dev/null 2>&1 || true
done
