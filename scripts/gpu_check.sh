#!/usr/bin/env bash
# One prepared check of the GPU path, for a machine that has a pip PyTorch
# with CUDA, nvcc, CMake, ninja and the nvidia-nccl pip package and nothing
# else (no MPI, no GoogleTest, no Debian -dev packages, no network):
#
#   scripts/gpu_check.sh OUT_DIR
#
# 1. environment: torch version, CUDA devices, nvcc, ninja, NCCL location;
# 2. configure core-only + CUDA + NCCL against that PyTorch's CMake config
#    (TORCH_CUDA_ARCH_LIST defaults to 9.0, H100/H200), build with ninja;
# 3. ctest -L gpu with CNX_REQUIRE_GPU=1 (every sparse op CUDA == CPU /
#    generic, the FCMAE step on CUDA, NCCL world size 1 + GradSync, two NCCL
#    ranks only when two GPUs are visible), then the CPU unit tests of the
#    same build (LibTorch 2.x);
# 4. benchmark: FCMAE-atto training step, 224 px, mask 0.6, batch 64 and 256,
#    fp32 and bf16 autocast: our sparse encoder with its CUDA kernels
#    (kernels=auto) and with the generic ATen path, against timm's ConvNeXt V2
#    with the mask multiplied in (scripts/gpu_bench_timm.py), as img/s and
#    ratios to timm in the same run.
# Writes OUT_DIR/summary.txt, OUT_DIR/summary.json, OUT_DIR/bench.jsonl and
# the logs. Without CUDA (a dry run on a CPU machine) the steps that need it
# are reported as skipped, the build and the CPU tests still run, and the
# benchmark program gets a tiny CPU smoke run (not a measurement). Exit 0 when
# no step failed. Meant to finish within 8 minutes on the GPU machine.
set -uo pipefail
OUT=${1:?usage: scripts/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${CNX_GPU_BUILD_DIR:-build-gpu}
JOBS=${CNX_JOBS:-$(nproc)}
T0=$(date +%s)
STEPS="$OUT/steps.tsv"
: >"$STEPS"
: >"$OUT/bench.jsonl"

say() { printf '\033[1m[gpu_check]\033[0m %s\n' "$*" >&2; }
# record NAME STATUS SECONDS DETAIL  (STATUS: ok | FAILED | skipped)
record() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$STEPS"
  case "$2" in
    FAILED) printf '\033[1;31m[gpu_check] FAILED: %s\033[0m (%s)\n' "$1" "$4" >&2 ;;
    skipped) printf '\033[33m[gpu_check] skipped: %s\033[0m (%s)\n' "$1" "$4" >&2 ;;
    *) say "ok: $1 (${3} s) $4" ;;
  esac
}
# step NAME LIMIT_S LOG CMD...: runs CMD with a time limit, output to LOG.
step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local s=$(date +%s)
  say "$name ..."
  if timeout "$limit" "$@" >"$log" 2>&1; then
    record "$name" ok $(( $(date +%s) - s )) "log: ${log#$OUT/}"
    return 0
  else
    local rc=$?
    tail -25 "$log" >&2
    record "$name" FAILED $(( $(date +%s) - s )) "exit $rc$([ $rc = 124 ] && echo ", over ${limit} s"); log: ${log#$OUT/}"
    return 1
  fi
}

# --- 1. environment ---------------------------------------------------------
PY=${PYTHON:-python3}
ENV_JSON=$("$PY" - <<'EOF' 2>"$OUT/env.err"
import json, shutil, subprocess
info = {}
try:
    import torch
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    info["gpus"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    info["gpu_name"] = torch.cuda.get_device_name(0) if info["gpus"] else None
    info["cmake_prefix"] = torch.utils.cmake_prefix_path
except Exception as e:
    info["torch_error"] = str(e)
try:
    import timm
    info["timm"] = timm.__version__
except Exception as e:
    info["timm_error"] = str(e)
nvcc = shutil.which("nvcc")
info["nvcc"] = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1] if nvcc else None
info["ninja"] = shutil.which("ninja")
print(json.dumps(info))
EOF
)
[ -n "$ENV_JSON" ] || ENV_JSON='{"python_error": "python3 failed"}'
echo "$ENV_JSON" >"$OUT/env.json"
jget() { "$PY" -c "import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print('' if v is None else v)" "$ENV_JSON" "$1"; }
GPUS=$(jget gpus); GPUS=${GPUS:-0}
TORCH_PREFIX=$(jget cmake_prefix)
HAVE_CUDA=0
if [ "$(jget cuda_available)" = True ] && [ -n "$(jget nvcc)" ]; then HAVE_CUDA=1; fi
say "environment: $ENV_JSON"
if [ "$HAVE_CUDA" = 1 ]; then
  record environment ok 0 "torch $(jget torch), $GPUS x $(jget gpu_name), $(jget nvcc)"
else
  record environment ok 0 "no usable CUDA (torch: $(jget torch) cuda_available=$(jget cuda_available), nvcc: $(jget nvcc)): dry run"
fi

# --- 2. configure + build ---------------------------------------------------
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
CFG=(-DCMAKE_BUILD_TYPE=Release -DCNX_CORE_ONLY=ON -DCNX_BUILD_BENCH=OFF)
[ -n "$TORCH_PREFIX" ] && CFG+=(-DCMAKE_PREFIX_PATH="$TORCH_PREFIX")
if [ "$HAVE_CUDA" = 1 ]; then
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
  CFG+=(-DCNX_WITH_CUDA=ON -DCNX_WITH_NCCL=ON -DCNX_REQUIRE_NCCL=ON)
else
  record "configure CUDA + NCCL" skipped 0 "no CUDA: configuring the CPU core-only build instead"
fi
# A build folder configured with another generator cannot be reused.
if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -q "CMAKE_GENERATOR:INTERNAL=${GEN[1]:-Unix Makefiles}" "$BUILD/CMakeCache.txt"; then
  rm -rf "$BUILD"
fi
BUILT=0
if step configure 180 "$OUT/configure.log" cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" "${CFG[@]}"; then
  grep 'cnx:' "$OUT/configure.log" >&2
  if step build 420 "$OUT/build.log" cmake --build "$BUILD" -j"$JOBS"; then BUILT=1; fi
fi

# --- 3. tests -----------------------------------------------------------------
if [ "$BUILT" = 1 ]; then
  if [ "$HAVE_CUDA" = 1 ]; then
    step "ctest -L gpu (CNX_REQUIRE_GPU=1)" 300 "$OUT/ctest_gpu.log" \
      env CNX_REQUIRE_GPU=1 ctest --test-dir "$BUILD" -L gpu --output-on-failure --timeout 240
    [ "$GPUS" -ge 2 ] || record "2-process NCCL test" skipped 0 "one GPU: comm_nccl_test's two-rank case skips"
  else
    record "ctest -L gpu" skipped 0 "no CUDA"
  fi
  step "ctest -L unit (CPU, this LibTorch)" 300 "$OUT/ctest_unit.log" \
    ctest --test-dir "$BUILD" -L unit --output-on-failure --timeout 240 -j"$(( JOBS > 8 ? 8 : JOBS ))"
fi

# --- 4. benchmark -------------------------------------------------------------
BENCH="$BUILD/bench/cnx-fcmae-step-bench"
BUDGET_S=${CNX_GPU_CHECK_BUDGET_S:-450}  # no new benchmark run starts after this (the whole check: < 8 min)
bench_one() {  # label, command...
  local label=$1
  shift
  local line
  if [ $(( $(date +%s) - T0 )) -gt "$BUDGET_S" ]; then
    echo "{\"impl\": \"$label\", \"skipped\": \"time budget of ${BUDGET_S} s used up\"}" >>"$OUT/bench.jsonl"
    return
  fi
  line=$(timeout 90 "$@" 2>>"$OUT/bench.err" | tail -1)
  [ -n "$line" ] || line="{\"impl\": \"$label\", \"error\": \"no output (crash or over 90 s; see bench.err)\"}"
  echo "$line" >>"$OUT/bench.jsonl"
  echo "$line" >&2
}
if [ "$BUILT" = 1 ] && [ -x "$BENCH" ]; then
  if [ "$HAVE_CUDA" = 1 ]; then
    s=$(date +%s)
    for batch in 64 256; do
      for prec in fp32 bf16; do
        common=(--device cuda --size 224 --batch "$batch" --mask 0.6 --precision "$prec" --warmup 2 --steps 10 --max-seconds 15)
        bench_one cnx-sparse-auto "$BENCH" "${common[@]}" --kernels auto
        bench_one cnx-sparse-generic "$BENCH" "${common[@]}" --kernels generic
        bench_one timm-dense-masked "$PY" scripts/gpu_bench_timm.py "${common[@]}"
      done
    done
    if grep -q '"error"' "$OUT/bench.jsonl"; then
      record benchmark FAILED $(( $(date +%s) - s )) "some configurations failed (their errors are in bench.jsonl)"
    else
      record benchmark ok $(( $(date +%s) - s )) "bench.jsonl; $(grep -c '"skipped"' "$OUT/bench.jsonl") runs skipped for time"
    fi
  else
    record benchmark skipped 0 "no CUDA"
    s=$(date +%s)
    bench_one cnx-sparse-auto "$BENCH" --device cpu --size 64 --batch 2 --warmup 0 --steps 1 --kernels auto
    bench_one cnx-sparse-generic "$BENCH" --device cpu --size 64 --batch 2 --warmup 0 --steps 1 --kernels generic
    if grep -q '"error"' "$OUT/bench.jsonl"; then
      record "benchmark program CPU smoke (not a measurement)" FAILED $(( $(date +%s) - s )) "bench.jsonl"
    else
      record "benchmark program CPU smoke (not a measurement)" ok $(( $(date +%s) - s )) "bench.jsonl"
    fi
  fi
else
  record benchmark skipped 0 "nothing built"
fi

# --- summary ------------------------------------------------------------------
"$PY" - "$OUT" "$(( $(date +%s) - T0 ))" <<'EOF'
import json, sys
out, total = sys.argv[1], int(sys.argv[2])
steps = []
for line in open(f"{out}/steps.tsv"):
    name, status, secs, detail = line.rstrip("\n").split("\t")
    steps.append({"step": name, "status": status, "seconds": int(secs), "detail": detail})
bench = []
for line in open(f"{out}/bench.jsonl"):
    try:
        bench.append(json.loads(line))
    except ValueError:
        bench.append({"error": "unparsable: " + line.strip()[:200]})
base = {(b.get("batch"), b.get("precision")): b.get("img_per_s") for b in bench
        if b.get("impl") == "timm-dense-masked" and "img_per_s" in b}
for b in bench:
    ref = base.get((b.get("batch"), b.get("precision")))
    if ref and "img_per_s" in b:
        b["ratio_to_timm"] = round(b["img_per_s"] / ref, 3)
env = json.load(open(f"{out}/env.json"))
failed = [s["step"] for s in steps if s["status"] == "FAILED"]
json.dump({"env": env, "steps": steps, "bench": bench, "failed": failed, "total_seconds": total},
          open(f"{out}/summary.json", "w"), indent=1)
lines = ["gpu_check summary (%d s)" % total, "environment: " + json.dumps(env), ""]
for s in steps:
    lines.append(f"{s['status']:8} {s['step']} ({s['seconds']} s) {s['detail']}")
if bench:
    lines += ["", f"{'impl':22} {'batch':>5} {'prec':>5} {'img/s':>10} {'ms/step':>9} {'x timm':>7}"]
    for b in bench:
        if "skipped" in b:
            lines.append(f"{b.get('impl', '?'):22}  skipped: {b['skipped']}")
        elif "error" in b:
            lines.append(f"{b.get('impl', '?'):22} {b.get('batch', ''):>5} {b.get('precision', ''):>5}  ERROR {b['error']}")
        else:
            lines.append(f"{b['impl']:22} {b['batch']:>5} {b['precision']:>5} {b['img_per_s']:>10.1f} "
                         f"{b['ms_per_step']:>9.2f} {b.get('ratio_to_timm', ''):>7}")
lines += ["", "FAILED: " + ", ".join(failed) if failed else "no step failed"]
open(f"{out}/summary.txt", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
grep -q $'\tFAILED\t' "$STEPS" && exit 1
exit 0
