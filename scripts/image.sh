#!/usr/bin/env bash
# Builds the container image offline: `FROM scratch` with the portcullis binary, the shared
# libraries it loads (as ldd lists them) and the dynamic loader. No registry, no network: the
# docker daemon named by DOCKER_HOST (or the local one) builds it from a local context.
#
#   scripts/image.sh [BINARY] [TAG]      defaults: ${BUILD_DIR:-build}/portcullis, portcullis:dev
#
# Users with a registry build the Dockerfile at the repository root instead.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-${BUILD_DIR:-build}/portcullis}
tag=${2:-portcullis:dev}
docker=${DOCKER:-docker}
[ -x "$binary" ] || { echo "image.sh: $binary is not an executable (build first: scripts/build.sh)" >&2; exit 1; }

ctx=$(mktemp -d /tmp/portcullis-image-XXXXXX)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root/usr/local/bin" "$root/tmp" "$root/etc/portcullis"
chmod 1777 "$root/tmp"          # `portcullis demo` writes its throwaway CA under /tmp
install -m 0755 "$binary" "$root/usr/local/bin/portcullis"
# Debug symbols stay in the build tree (a debug build is ~80 MB of them).
if command -v strip >/dev/null; then strip --strip-debug "$root/usr/local/bin/portcullis"; fi

# Every library ldd resolves (`name => /path (addr)`) and the loader (`/lib64/ld-... (addr)`),
# copied to the same path, symlinks followed.
libs=$(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
[ -n "$libs" ] || { echo "image.sh: ldd found no libraries for $binary (a static binary needs none)" >&2; }
if ldd "$binary" | grep -q "not found"; then
  echo "image.sh: missing libraries:" >&2; ldd "$binary" | grep "not found" >&2; exit 1
fi
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# Name lookups (the demo's "localhost") read /etc/hosts through glibc's files module; a numeric
# UID needs no passwd entry, but names in logs read better with one.
printf '127.0.0.1 localhost\n::1 localhost\n' > "$root/etc/hosts"
printf 'root:x:0:0:root:/:/nonexistent\nportcullis:x:1337:1337:portcullis:/:/nonexistent\n' > "$root/etc/passwd"
printf 'root:x:0:\nportcullis:x:1337:\n' > "$root/etc/group"
for nss in libnss_files.so.2 libnss_dns.so.2; do
  for dir in /lib/x86_64-linux-gnu /lib/aarch64-linux-gnu /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu; do
    if [ -e "$dir/$nss" ]; then mkdir -p "$root$dir"; cp -L "$dir/$nss" "$root$dir/$nss"; break; fi
  done
done

cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["version"]
DOCKERFILE
# The classic builder: needs nothing but the daemon (BuildKit may not be installed).
DOCKER_BUILDKIT=0 "$docker" build --quiet --tag "$tag" "$ctx" >/dev/null
size=$("$docker" image inspect --format '{{.Size}}' "$tag")
echo "built $tag from $binary ($(echo "$libs" | wc -w) libraries, $((size / 1024 / 1024)) MiB)"
