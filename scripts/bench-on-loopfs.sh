#!/usr/bin/env bash
# Runs `npm run bench` on a fresh ext4 filesystem of its own (a sparse loop file), so that a
# million-file run neither fills the machine's disk nor suffers from what other work left behind
# (ext4 slows file creation for a while after large deletions). 1 KiB blocks: a 200-byte playlist
# takes 1 KiB instead of 4, so 11 replicas x 3 trees of 1M files fit (~50M inodes). Needs root (losetup, mount).
#
# The page cache is dropped before the run, so every run starts from the same memory, whatever ran
# before it. --direct-io on spares the second copy of every block in the image file's page cache
# (kswapd reclaims ~20k pages/s at a million files without it), but the loop device then waits for
# the virtual disk on every write: at 1M files the full build took 45.8 s with it against 41.1 s,
# the full pull 154.9 s to the swap against 141.0 s (same day, BENCHMARKS.md). So it is off.
#
#   scripts/bench-on-loopfs.sh --files 1000000 [--replicas 10] [--size 120G] [--inodes 50000000] [--direct-io on|off]
set -euo pipefail
cd "$(dirname "$0")/.."
size=120G
inodes=50000000
direct_io=off
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size="$2"; shift 2 ;;
    --inodes) inodes="$2"; shift 2 ;;
    --direct-io) direct_io="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench-on-loopfs: needs root for losetup and mount" >&2; exit 2; }
case "$direct_io" in on|off) ;; *) echo "bench-on-loopfs: --direct-io takes on or off, not '$direct_io'" >&2; exit 2 ;; esac
work="$(pwd)/.bench"
mkdir -p "$work"
image="$work/loopfs.img"
mnt="$work/loopfs"
device=""
cleanup() {
  umount "$mnt" 2>/dev/null || true
  [ -z "$device" ] || losetup -d "$device" 2>/dev/null || true
  rm -f "$image"
}
trap cleanup EXIT
rm -f "$image"
truncate -s "$size" "$image"
mkfs.ext4 -q -F -b 1024 -I 128 -N "$inodes" -E lazy_itable_init=0,lazy_journal_init=0 "$image"
mkdir -p "$mnt"
device="$(losetup --find --show --direct-io="$direct_io" "$image")"
mount -o noatime "$device" "$mnt"
sync
echo 3 > /proc/sys/vm/drop_caches
echo "bench-on-loopfs: $(df -h "$mnt" | tail -1); direct I/O $(cat "/sys/block/${device#/dev/}/loop/dio" 2>/dev/null || echo '?'); $(free -m | awk '/^Mem:/ {print $7 " MiB available of " $2}')" >&2
npx tsc -p tsconfig.json
node dist/scripts/bench.js --work "$mnt" "${args[@]}"
