#!/usr/bin/env bash
# Runs `npm run bench` (or with --wan, `npm run bench:wan`: scripts/wan-bench.ts, its options
# after ours) on a fresh ext4 filesystem of its own (a sparse loop file), so that a
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
# --fs-per-replica gives each replica a filesystem of its own, as it has on its own machine: a
# replica's syncfs before its swap then flushes its own tree, not the nine others' pulls and
# catch-ups too. The baselines' rsync and tar copies for a replica go on that filesystem as well
# (with --wan too: wan-bench.ts --replica-homes).
#
# --block-size 4096 makes the filesystems as a replica's usually is (mkfs.ext4's default): the
# replica writes a changed file over in whole 4 KiB pages, which on 1 KiB blocks flushes slower
# than on 4 KiB ones (BENCHMARKS.md, "Writing in place"). It needs ~4x the disk per tree.
#
#   scripts/bench-on-loopfs.sh --files 1000000 [--replicas 10] [--size 120G] [--inodes 50000000]
#                              [--block-size 1024|2048|4096] [--direct-io on|off] [--fs-per-replica]
#   scripts/bench-on-loopfs.sh --wan --files 1000000 --replicas 10 [--hours 1] [--fs-per-replica]   # across continents
set -euo pipefail
cd "$(dirname "$0")/.."
size=120G
inodes=50000000
direct_io=off
block_size=1024
per_replica=no
runner=bench
files=100000
replicas=10
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size="$2"; shift 2 ;;
    --inodes) inodes="$2"; shift 2 ;;
    --direct-io) direct_io="$2"; shift 2 ;;
    --block-size) block_size="$2"; shift 2 ;;
    --fs-per-replica) per_replica=yes; shift ;;
    --wan) runner=wan-bench; shift ;;
    --files) files="$2"; args+=("$1" "$2"); shift 2 ;;
    --replicas) replicas="$2"; args+=("$1" "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench-on-loopfs: needs root for losetup and mount" >&2; exit 2; }
case "$direct_io" in on|off) ;; *) echo "bench-on-loopfs: --direct-io takes on or off, not '$direct_io'" >&2; exit 2 ;; esac
case "$block_size" in 1024|2048|4096) ;; *) echo "bench-on-loopfs: --block-size takes 1024, 2048 or 4096, not '$block_size'" >&2; exit 2 ;; esac
work="$(pwd)/.bench"
mkdir -p "$work"
image="$work/loopfs.img"
mnt="$work/loopfs"
device=""
homes="$work/replica-homes"
cleanup() {
  for home in "$homes"/replica-*; do
    [ -d "$home" ] || continue
    umount "$home" 2>/dev/null || true
    rm -f "$home.img"
    rmdir "$home" 2>/dev/null || true
  done
  rmdir "$homes" 2>/dev/null || true
  umount "$mnt" 2>/dev/null || true
  [ -z "$device" ] || losetup -d "$device" 2>/dev/null || true
  rm -f "$image"
}
trap cleanup EXIT
rm -f "$image"
truncate -s "$size" "$image"
mkfs.ext4 -q -F -b "$block_size" -I 128 -N "$inodes" -E lazy_itable_init=0,lazy_journal_init=0 "$image" >&2
mkdir -p "$mnt"
device="$(losetup --find --show --direct-io="$direct_io" "$image")"
mount -o noatime "$device" "$mnt"
if [ "$per_replica" = yes ]; then
  [[ "$files" =~ ^[0-9]+$ && "$replicas" =~ ^[0-9]+$ ]] || { echo "bench-on-loopfs: --files and --replicas take whole numbers" >&2; exit 2; }
  # Three trees, the baselines' copy and the cached archives: ~4.2 inodes and ~5 KiB per file.
  mkdir -p "$homes"
  for i in $(seq 0 "$replicas"); do
    home="$homes/replica-$(printf %02d "$i")"
    mkdir -p "$home"
    truncate -s "$((files * 12 * block_size / 1024 + 1048576))K" "$home.img"
    mkfs.ext4 -q -F -b "$block_size" -I 128 -N "$((files * 5 + 200000))" -E lazy_itable_init=0,lazy_journal_init=0 "$home.img" >&2
    mount -o loop,noatime "$home.img" "$home"
  done
  args+=(--replica-homes "$homes")
  echo "bench-on-loopfs: $((replicas + 1)) replica filesystems of $(df -h "$homes/replica-00" | tail -1 | awk '{print $2}') each under $homes" >&2
fi
sync
echo 3 > /proc/sys/vm/drop_caches
echo "bench-on-loopfs: $(df -h "$mnt" | tail -1); direct I/O $(cat "/sys/block/${device#/dev/}/loop/dio" 2>/dev/null || echo '?'); $(free -m | awk '/^Mem:/ {print $7 " MiB available of " $2}')" >&2
npx tsc -p tsconfig.json
if [ "$runner" = bench ]; then node dist/scripts/bench.js --work "$mnt" "${args[@]}"
else node dist/scripts/wan-bench.js --work "$mnt/wan" "${args[@]}"; fi # a directory of its own: it wants an empty one
