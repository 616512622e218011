#!/usr/bin/env bash
# What a change costs: the same hours of change built and pulled by two checkouts of this
# repository (each with `npm ci` done), one after the other, on the same corpus, with the CPU time
# (user + sys: less sensitive to a busy machine than the wall clock), the wall clock and the peak
# RSS of each step from /usr/bin/time. Used for the exact-copy format (BENCHMARKS.md).
#
#   scripts/bench-commits.sh OLD_CHECKOUT NEW_CHECKOUT [FILES] [ROUNDS]
#
# Each round runs OLD then NEW: full build, full pull, then two hours of change (10% modified,
# 0.5% deleted, 0.5% added), each built and pulled with --swap (two trees: the second hour is the
# steady state). The rows of the second hour are the ones to compare.
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2"); files=${3:-200000}; rounds=${4:-2}
work=$(mktemp -d /tmp/bench-commits.XXXXXX)
trap 'rm -rf "$work"' EXIT
command -v /usr/bin/time >/dev/null || { echo "bench-commits: /usr/bin/time is needed (Debian: time)" >&2; exit 1; }

node "$new/dist/scripts/corpus.js" --files "$files" --out "$work/corpus" >/dev/null
sleep 2.1 # past the racy window: a fresh file is read again by the next build

step() { # label, command...: prints "label cpu_s wall_s rss_mib"
  local label=$1; shift
  sync
  /usr/bin/time -f "%U %S %e %M" -o "$work/time" "$@" >/dev/null 2>"$work/stderr" || { cat "$work/stderr" >&2; exit 1; }
  read -r user sys wall rss <"$work/time"
  printf '%-28s %8.2f %8.2f %8.1f\n' "$label" "$(echo "$user + $sys" | bc)" "$wall" "$(echo "$rss / 1024" | bc -l)"
}

printf '%-28s %8s %8s %8s\n' step cpu_s wall_s rss_mib
for round in $(seq 1 "$rounds"); do
  for side in old new; do
    repo=${!side}
    d="$work/$side-$round"
    mkdir -p "$d/store"
    cp -a "$work/corpus" "$d/master"
    step "$side full build" "$repo/bin/snapshot" build --source "$d/master" --store "$d/store" --quiet
    step "$side full pull" "$repo/bin/snapshot" pull --from "$d/store" --target "$d/replica" --swap --quiet
    for hour in 1 2; do
      node "$new/dist/scripts/corpus.js" --mutate --seed "hour-$hour" --out "$d/master" >/dev/null
      sleep 2.1
      step "$side hour $hour delta build" "$repo/bin/snapshot" build --source "$d/master" --store "$d/store" --quiet
      step "$side hour $hour delta pull" "$repo/bin/snapshot" pull --from "$d/store" --target "$d/replica" --swap --quiet
    done
    rm -rf "$d"
  done
done
