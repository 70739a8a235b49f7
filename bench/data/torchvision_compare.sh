#!/usr/bin/env bash
# Our training transform vs torchvision + PIL on the same real JPEGs, one
# thread each, in the same run: decode + RandomResizedCrop(224, scale
# (0.08, 1), bicubic) + horizontal flip + normalise to float CHW.
#
#   bench/data/torchvision_compare.sh [--reps 5] [--min-seconds 2]
#       [--sets imagenet,wallpapers] [--images DIR] [--build DIR]
#
# The image sets come from bench/data/make_jpeg_sets.py (Debian's
# lomiri-wallpapers-16.04 and mate-backgrounds photos; written to
# --images, default BUILD/bench-jpegs). Per set, `reps` rounds; in each
# round cnx-transform-bench (DCT scaling on/off x crop decoding on/off) and torchvision_compare.py
# (plain, draft) each run once, taking turns on who goes first (load drift
# cancels). Per round the ratios of images per CPU-second (per core) are
# formed from that round's numbers; printed are their medians and ranges
# over the rounds, with the CPU and the load average. The raw lines go to
# BUILD/bench-jpegs/results.txt. Needs /usr/bin/python3 with Debian's
# python3-torchvision and python3-pil (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
die() { echo "torchvision_compare.sh: $*" >&2; exit 2; }

reps=5 min_seconds=2 sets=imagenet,wallpapers images="" build=${CNX_BUILD_DIR:-build}
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps=${2:?}; shift 2 ;;
    --min-seconds) min_seconds=${2:?}; shift 2 ;;
    --sets) sets=${2:?}; shift 2 ;;
    --images) images=${2:?}; shift 2 ;;
    --build) build=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ "$reps" =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive integer, got $reps"
images=${images:-$build/bench-jpegs}
bin=$build/bin/cnx-transform-bench
[ -x "$bin" ] || die "$bin not found: build it (cmake --build $build --target cnx-transform-bench)"
PY=/usr/bin/python3
$PY -c 'import torchvision, PIL' 2>/dev/null || die "$PY cannot import torchvision and PIL (apt-get install python3-torchvision python3-pil)"
$PY bench/data/make_jpeg_sets.py "$images"

IFS=, read -ra set_list <<<"$sets"
for s in "${set_list[@]}"; do
  [ -d "$images/$s" ] || die "--sets: no image set '$s' in $images (imagenet, wallpapers)"
done
results=$images/results.txt
: > "$results"
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
fam=$(lscpu | sed -n 's/^CPU family: *//p' | head -1)
model=$(lscpu | sed -n 's/^Model: *//p' | head -1)
echo "cpu: $cpu (family $fam model $model), $(nproc) logical CPUs; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "cpu $cpu family $fam model $model nproc $(nproc)" >> "$results"

ours() { "$bin" --dir "$images/$1" --label "$1" --reps 1 --min-seconds "$min_seconds"; }
theirs() { $PY bench/data/torchvision_compare.py --dir "$images/$1" --label "$1" --reps 1 --min-seconds "$min_seconds"; }
for s in "${set_list[@]}"; do
  echo "load $s start $(cut -d' ' -f1-3 /proc/loadavg)" >> "$results"
  for ((r = 0; r < reps; r++)); do
    if ((r % 2 == 0)); then order="ours theirs"; else order="theirs ours"; fi
    for who in $order; do
      $who "$s" | sed -n "s/^result /result round=$r /p" >> "$results"
    done
    echo "  $s: round $((r + 1))/$reps done (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  done
  echo "load $s end $(cut -d' ' -f1-3 /proc/loadavg)" >> "$results"
done

$PY - "$results" <<'EOF'
import collections, statistics, sys

rows, loads = [], collections.defaultdict(dict)
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "result":
        rows.append(dict(kv.split("=", 1) for kv in f[1:]))
    elif f[0] == "load":
        loads[f[1]][f[2]] = " ".join(f[3:])
names = {("cnx", "dct_crop"): "cnx, DCT scaling + crop", ("cnx", "dct"): "cnx, DCT scaling on",
         ("cnx", "crop"): "cnx, crop decode only", ("cnx", "full"): "cnx, DCT scaling off",
         ("torchvision", "plain"): "torchvision + PIL", ("torchvision", "draft"): "torchvision + PIL draft()"}
for s in dict.fromkeys(r["set"] for r in rows):
    print(f"\nset {s} (load average {loads[s].get('start', '?')} at start, {loads[s].get('end', '?')} at end)")
    per = collections.defaultdict(dict)  # round -> (impl, variant) -> img/CPU-s
    wall = collections.defaultdict(list)
    for r in rows:
        if r["set"] == s:
            per[r["round"]][(r["impl"], r["variant"])] = float(r["img_per_cpu_s"])
            wall[(r["impl"], r["variant"])].append(float(r["img_per_s"]))
    print(f"  {'':28s} {'img/CPU-s (per core)':>22s}   {'img/s wall':>10s}")
    for k, name in names.items():
        v = [p[k] for p in per.values() if k in p]
        if v:
            print(f"  {name:28s} {statistics.median(v):9.1f} [{min(v):6.1f}-{max(v):6.1f}]   "
                  f"{statistics.median(wall[k]):10.1f}")
    print(f"  ratios per core (median [min-max] over {len(per)} interleaved rounds):")
    for a, b in [(("cnx", "dct_crop"), ("torchvision", "plain")), (("cnx", "dct_crop"), ("torchvision", "draft")),
                 (("cnx", "dct"), ("torchvision", "plain")), (("cnx", "full"), ("torchvision", "plain")),
                 (("cnx", "dct_crop"), ("cnx", "dct"))]:
        q = [p[a] / p[b] for p in per.values() if a in p and b in p]
        if q:
            print(f"    {names[a]:22s} / {names[b]:26s} {statistics.median(q):5.2f}x [{min(q):.2f}-{max(q):.2f}]")
EOF
echo "raw lines: $results"
