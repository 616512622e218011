#!/usr/bin/env bash
# Runs `npm run bench` on a fresh ext4 filesystem of its own (a sparse loop file), so that a
# million-file run neither fills the machine's disk nor suffers from what other work left behind
# (ext4 slows file creation for a while after large deletions). 1 KiB blocks: a 200-byte playlist
# takes 1 KiB instead of 4, so 11 replicas x 3 trees of 1M files fit (~50M inodes). Needs root (mount -o loop).
#
#   scripts/bench-on-loopfs.sh --files 1000000 [--replicas 10] [--size 120G] [--inodes 50000000]
set -euo pipefail
cd "$(dirname "$0")/.."
size=120G
inodes=50000000
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size="$2"; shift 2 ;;
    --inodes) inodes="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench-on-loopfs: needs root for mount -o loop" >&2; exit 2; }
work="$(pwd)/.bench"
mkdir -p "$work"
image="$work/loopfs.img"
mnt="$work/loopfs"
cleanup() {
  umount "$mnt" 2>/dev/null || true
  rm -f "$image"
}
trap cleanup EXIT
rm -f "$image"
truncate -s "$size" "$image"
mkfs.ext4 -q -F -b 1024 -I 128 -N "$inodes" -E lazy_itable_init=0,lazy_journal_init=0 "$image"
mkdir -p "$mnt"
mount -o loop,noatime "$image" "$mnt"
echo "bench-on-loopfs: $(df -h "$mnt" | tail -1)" >&2
npx tsc -p tsconfig.json
node dist/scripts/bench.js --work "$mnt" "${args[@]}"
