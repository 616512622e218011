#!/usr/bin/env bash
# What the tests need beyond Node: real servers and tools, installed from Debian's packages when
# missing (as root, with apt-get), so `npm test` runs on a fresh machine. Idempotent and quick when
# everything is present. Without root or apt-get it names what is missing and exits 1.
# One line per tool: the command that proves it is there, then the Debian package that brings it.
set -euo pipefail

needs=(
  "zstd zstd"
  "tar tar"
  "find findutils"
  "mkfifo coreutils"
  "prometheus prometheus"
  "promtool prometheus"
  "prometheus-node-exporter prometheus-node-exporter"
  "systemd-analyze systemd"
  "unshare util-linux"
  "ip iproute2"
  "tc iproute2"
  "nginx nginx"
  "rsync rsync"
)

missing=()
for pair in "${needs[@]}"; do
  read -r cmd pkg <<<"$pair"
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: missing Debian packages: ${missing[*]} (install them, or run this script as root)" >&2
  exit 1
fi
echo "test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
