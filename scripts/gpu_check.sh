#!/usr/bin/env bash
# One prepared check of GPU pretraining, for a machine that has a pip PyTorch
# with CUDA, nvcc, CMake, ninja and the nvidia-nccl pip package and nothing
# else (no MPI, no gRPC, no GoogleTest, no Debian -dev packages, no network):
#
#   scripts/gpu_check.sh [--dry-run] OUT_DIR
#
# 1. environment: torch version, CUDA devices, nvcc, ninja, NCCL location;
# 2. the trainer's other libraries: Debian packages carried in .gpu-deps/debs
#    (scripts/gpu_deps.sh fetch, here) unpacked into .gpu-deps/prefix; where
#    the system has them (CI) and nothing was carried, the system's;
# 3. configure the GPU machine's flavour (docs/gpu.md: CUDA kernels + NCCL,
#    no MPI, no coordinator) against that PyTorch's LibTorch
#    (TORCH_CUDA_ARCH_LIST defaults to 9.0, H100/H200), build with ninja;
# 4. ctest -L gpu with CNX_REQUIRE_GPU=1 (every sparse op CUDA == CPU /
#    generic, the FCMAE step on CUDA, NCCL world size 1 + GradSync);
# 5. pretraining with cnx-worker on the GPU: ConvNeXt V2-atto FCMAE at 224 px,
#    batch 64, synthetic images, NCCL world size 1 through the TCP rendezvous
#    store (CNX_RANK/CNX_WORLD_SIZE/CNX_MASTER_ADDR/CNX_MASTER_PORT): fp32 6
#    steps straight vs 3 steps + checkpoint + --resume auto + 3 steps, whose
#    final checkpoints must be byte-identical (if not, a second straight run
#    tells a resume bug from run-to-run nondeterminism); then bf16
#    (train.precision) when the build's config knows the key;
# 6. benchmark: FCMAE-atto training step, 224 px, mask 0.6, batch 64 and 256,
#    fp32 and bf16 autocast: our sparse encoder with its CUDA kernels
#    (kernels=auto) and with the generic ATen path, against timm's ConvNeXt V2
#    with the mask multiplied in (scripts/gpu_bench_timm.py), as img/s and
#    ratios to timm in the same run.
# Writes OUT_DIR/summary.txt, OUT_DIR/summary.json, OUT_DIR/bench.jsonl and
# the logs. --dry-run (and any machine without a usable CUDA device) runs
# everything up to the first use of a device: the build, the configure against
# the carried Debian packages with the system's hidden (the GPU machine's
# situation), every cnx-worker command line up to its device check (each must
# stop with train.device's "no CUDA device" error, exit 2), and a tiny CPU
# smoke run of the benchmark program (not a measurement). Exit 0 when no step
# failed. Meant to finish within 10 minutes on the GPU machine (16 cores).
#
#   CNX_GPU_BUILD_DIR (build-gpu), CNX_JOBS, CNX_TORCH_PREFIX (LibTorch root;
#   default: python3's torch), CNX_GPU_DEPS (.gpu-deps), TORCH_CUDA_ARCH_LIST,
#   CNX_GPU_BUILD_LIMIT_S (build time limit: 420 s with a GPU, else 7200 s),
#   CNX_GPU_BUILD_ALL=1 (with a GPU, build every target, not only the check's)
set -uo pipefail
DRY=0
if [ "${1:-}" = --dry-run ]; then
  DRY=1
  shift
fi
OUT=${1:?usage: scripts/gpu_check.sh [--dry-run] OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${CNX_GPU_BUILD_DIR:-build-gpu}
JOBS=${CNX_JOBS:-$(nproc)}
DEPS=${CNX_GPU_DEPS:-$ROOT/.gpu-deps}
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
import json, os, shutil, subprocess
info = {}
try:
    import torch
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    info["gpus"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    info["gpu_name"] = torch.cuda.get_device_name(0) if info["gpus"] else None
    info["torch_root"] = os.path.dirname(os.path.dirname(torch.utils.cmake_prefix_path))
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
info["cores"] = os.cpu_count()
print(json.dumps(info))
EOF
)
[ -n "$ENV_JSON" ] || ENV_JSON='{"python_error": "python3 failed"}'
echo "$ENV_JSON" >"$OUT/env.json"
jget() { "$PY" -c "import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print('' if v is None else v)" "$ENV_JSON" "$1"; }
GPUS=$(jget gpus); GPUS=${GPUS:-0}
TORCH_PREFIX=${CNX_TORCH_PREFIX:-$(jget torch_root)}
HAVE_CUDA=0
if [ "$DRY" = 0 ] && [ "$(jget cuda_available)" = True ]; then HAVE_CUDA=1; fi
say "environment: $ENV_JSON"
if [ "$HAVE_CUDA" = 1 ]; then
  record environment ok 0 "torch $(jget torch), $GPUS x $(jget gpu_name), $(jget nvcc), LibTorch $TORCH_PREFIX"
else
  record environment ok 0 "dry run ($([ "$DRY" = 1 ] && echo --dry-run || echo "no usable CUDA: torch $(jget torch) cuda_available=$(jget cuda_available)")), LibTorch $TORCH_PREFIX"
fi

# --- 2. the trainer's other libraries ---------------------------------------
# The GPU machine's flavour; GoogleTest is hidden so that CI builds exactly
# what the GPU machine builds (the core tests on tests/minitest).
CFG=(-DCMAKE_BUILD_TYPE=Release -DCNX_WITH_MPI=OFF -DCNX_WITH_COORDINATOR=OFF
  -DCNX_WITH_CUDA=ON -DCNX_WITH_NCCL=ON -DCNX_REQUIRE_NCCL=ON -DCNX_BUILD_BENCH=OFF
  -DCMAKE_DISABLE_FIND_PACKAGE_GTest=ON)
[ -n "${CUDACXX:-}" ] && CFG+=("-DCMAKE_CUDA_COMPILER=$CUDACXX")
PREFIXES="$TORCH_PREFIX"
if [ "$HAVE_CUDA" = 0 ]; then
  # The build CI shares with scripts/test_gpu_flavours.sh uses the system's
  # libraries; the configure against the carried packages is checked below.
  record "unpack .gpu-deps/debs" skipped 0 "dry run: the build uses the system's libraries"
elif compgen -G "$DEPS/debs/*.deb" >/dev/null; then
  s=$(date +%s)
  if LIBPREFIX=$(scripts/gpu_deps.sh unpack "$DEPS/debs" "$DEPS/prefix" 2>"$OUT/deps.log"); then
    record "unpack .gpu-deps/debs" ok $(( $(date +%s) - s )) "$(ls "$DEPS"/debs/*.deb | wc -l) Debian packages -> $LIBPREFIX"
    PREFIXES="$TORCH_PREFIX;$LIBPREFIX"
    lib="$LIBPREFIX/lib/x86_64-linux-gnu"
    # The prefix's libraries load others from the prefix (libarchive ->
    # libxml2 -> libicu): rpath-link for the linker, an RPATH (searched for
    # indirect dependencies too, unlike RUNPATH) for the loader.
    CFG+=("-DCMAKE_EXE_LINKER_FLAGS=-Wl,-rpath-link,$lib -Wl,--disable-new-dtags -Wl,-rpath,$lib")
  else
    record "unpack .gpu-deps/debs" FAILED $(( $(date +%s) - s )) "log: deps.log"
  fi
else
  record "unpack .gpu-deps/debs" skipped 0 "none carried: the system's libraries (run scripts/gpu_deps.sh fetch and carry .gpu-deps/debs for a machine without them)"
fi
CFG+=("-DCMAKE_PREFIX_PATH=$PREFIXES")

# --- 3. configure + build ---------------------------------------------------
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
# A build folder configured with another generator cannot be reused.
if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -q "CMAKE_GENERATOR:INTERNAL=${GEN[1]:-Unix Makefiles}" "$BUILD/CMakeCache.txt"; then
  rm -rf "$BUILD"
fi
# On the GPU machine a build that overruns ends the check early enough to
# keep the lease; a dry run (CI's 2 cores, cold) may take much longer.
BUILD_LIMIT_S=${CNX_GPU_BUILD_LIMIT_S:-$([ "$HAVE_CUDA" = 1 ] && echo 420 || echo 7200)}
# With a GPU only what the check runs (75 of the flavour's 114 translation
# units); the dry run (CI) builds everything the flavour has.
TARGETS=()
if [ "$HAVE_CUDA" = 1 ] && [ "${CNX_GPU_BUILD_ALL:-0}" != 1 ]; then
  TARGETS=(cnx-worker cnx-fcmae-step-bench test_sparse_ops_cuda test_fcmae_cuda comm_nccl_test)
fi
BUILT=0
if step configure 300 "$OUT/configure.log" cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" "${CFG[@]}"; then
  grep 'cnx:' "$OUT/configure.log" >&2
  if ! grep -q 'mpi=OFF coordinator=OFF cuda=ON nccl=ON' "$OUT/configure.log"; then
    record "configure: GPU flavour" FAILED 0 "expected 'mpi=OFF coordinator=OFF cuda=ON nccl=ON' (configure.log)"
  elif step "build ${TARGETS[*]:-everything}" "$BUILD_LIMIT_S" "$OUT/build.log" \
    cmake --build "$BUILD" -j"$JOBS" ${TARGETS[@]:+--target "${TARGETS[@]}"}; then
    BUILT=1
  fi
fi
# Dry run only: the configure the GPU machine does, against the carried
# packages with the system's /usr and pkg-config hidden (cheap; no build).
# "/" is hidden too: with /bin on PATH, CMake also searches the prefix "/"
# and would find /lib/x86_64-linux-gnu/cmake (merged /usr: the same files).
if [ "$HAVE_CUDA" = 0 ] && command -v apt-get >/dev/null; then
  s=$(date +%s)
  if scripts/gpu_deps.sh fetch "$DEPS/debs" >"$OUT/deps_fetch.log" 2>&1 \
    && P=$(scripts/gpu_deps.sh unpack "$DEPS/debs" "$DEPS/prefix" 2>>"$OUT/deps_fetch.log"); then
    rm -rf "$OUT/configure-prefix"
    if cmake -S "$ROOT" -B "$OUT/configure-prefix" "${GEN[@]}" "${CFG[@]}" "-DCMAKE_PREFIX_PATH=$TORCH_PREFIX;$P" \
      "-DCMAKE_IGNORE_PREFIX_PATH=/usr;/" -DPKG_CONFIG_EXECUTABLE=/nonexistent/pkg-config >"$OUT/configure_prefix.log" 2>&1 \
      && ! grep -E '^(yaml-cpp|spdlog|fmt|nlohmann_json|CLI11)_DIR:PATH=/usr|^[A-Z_]*(LIB|LIBRARY|LIBRARY_RELEASE|INCLUDE_DIR|HEADER_DIR):[A-Z]*=/(usr/|lib)|^[A-Za-z0-9_]*_DIR:PATH=/lib' \
        "$OUT/configure-prefix/CMakeCache.txt" | grep -v -E 'cuda|CUDA|NCCL|/usr/local|RANLIB:' >"$OUT/configure_prefix_leaks.txt"; then
      record "configure against .gpu-deps (system /usr hidden)" ok $(( $(date +%s) - s )) "$(du -sh "$DEPS/debs" | cut -f1) of .deb files; log: configure_prefix.log"
    else
      tail -20 "$OUT/configure_prefix.log" >&2
      record "configure against .gpu-deps (system /usr hidden)" FAILED $(( $(date +%s) - s )) "configure_prefix.log, configure_prefix_leaks.txt"
    fi
    rm -rf "$OUT/configure-prefix"
  else
    tail -5 "$OUT/deps_fetch.log" >&2
    record "configure against .gpu-deps (system /usr hidden)" FAILED $(( $(date +%s) - s )) "fetch/unpack: deps_fetch.log"
  fi
fi

# --- 4. GPU tests -------------------------------------------------------------
if [ "$BUILT" = 1 ] && [ "$HAVE_CUDA" = 1 ]; then
  step "ctest -L gpu (CNX_REQUIRE_GPU=1)" 300 "$OUT/ctest_gpu.log" \
    env CNX_REQUIRE_GPU=1 ctest --test-dir "$BUILD" -L gpu --output-on-failure --timeout 240
  [ "$GPUS" -ge 2 ] || record "2-process NCCL test" skipped 0 "one GPU: comm_nccl_test's two-rank case skips"
else
  record "ctest -L gpu" skipped 0 "$([ "$BUILT" = 1 ] && echo "no CUDA" || echo "nothing built")"
fi

# --- 5. pretraining with cnx-worker ------------------------------------------
WORKER="$BUILD/worker/cnx-worker"
PORT=$(( 29500 + RANDOM % 1000 ))
# worker LOG ARGS...: one rank, world size 1, through the TCP store.
worker() {
  local log=$1
  shift
  PORT=$(( PORT + 1 ))
  CNX_RANK=0 CNX_WORLD_SIZE=1 CNX_MASTER_ADDR=127.0.0.1 CNX_MASTER_PORT=$PORT \
    timeout 240 "$WORKER" --config "$ROOT/configs/fcmae_atto.yaml" --synthetic --synthetic-samples 1024 \
    --set train.device=cuda --set distributed.backend=nccl --set metrics.enabled=false --set optimizer.global_batch=0 \
    --set schedule.epochs=100 --set schedule.warmup_epochs=1 --set schedule.log_every=1 \
    --set checkpoint.every_minutes=0 --set checkpoint.every_steps=3 "$@" >"$log" 2>&1
}
RUNS="$OUT/pretrain"
mkdir -p "$RUNS"
if [ "$BUILT" = 1 ] && [ -x "$WORKER" ] && [ "$HAVE_CUDA" = 1 ]; then
  s=$(date +%s)
  rm -rf "$RUNS"/{a,b,a2}
  if worker "$RUNS/a.log" --set checkpoint.root="$RUNS/a" --max-steps 6 --resume none \
    && worker "$RUNS/b1.log" --set checkpoint.root="$RUNS/b" --max-steps 3 --resume none \
    && worker "$RUNS/b2.log" --set checkpoint.root="$RUNS/b" --max-steps 6 --resume auto; then
    if ! grep -q "resumed from .*step-00000003 at step 3" "$RUNS/b2.log"; then
      record "pretrain fp32: 6 steps == 3 + resume + 3" FAILED $(( $(date +%s) - s )) "the second run did not resume (pretrain/b2.log)"
    elif "$ROOT/scripts/compare_checkpoints.py" "$RUNS/a/step-00000006" "$RUNS/b/step-00000006" >/dev/null; then
      record "pretrain fp32: 6 steps == 3 + resume + 3" ok $(( $(date +%s) - s )) "byte-identical checkpoints (atto, 224 px, batch 64, NCCL world 1 via the TCP store); pretrain/*.log"
    else
      # A resume bug, or a GPU path that differs run to run?
      worker "$RUNS/a2.log" --set checkpoint.root="$RUNS/a2" --max-steps 6 --resume none
      if "$ROOT/scripts/compare_checkpoints.py" "$RUNS/a/step-00000006" "$RUNS/a2/step-00000006" >/dev/null; then
        record "pretrain fp32: 6 steps == 3 + resume + 3" FAILED $(( $(date +%s) - s )) "resumed run differs while two straight runs agree: a resume bug (scripts/compare_checkpoints.py pretrain/a/step-00000006 pretrain/b/step-00000006)"
      else
        record "pretrain fp32: 6 steps == 3 + resume + 3" FAILED $(( $(date +%s) - s )) "two straight runs already differ: the GPU step is not deterministic run to run (cuDNN/cuBLAS algorithm choice?)"
      fi
    fi
  else
    tail -20 "$RUNS"/*.log >&2
    record "pretrain fp32: 6 steps == 3 + resume + 3" FAILED $(( $(date +%s) - s )) "a run failed (pretrain/*.log)"
  fi
  grep -h 'step [0-9]*/' "$RUNS/a.log" | tail -3 >&2
  s=$(date +%s)
  if worker "$RUNS/bf16.log" --set checkpoint.root="$RUNS/bf16" --set train.precision=bf16 --max-steps 20 --resume none; then
    record "pretrain bf16: 20 steps" ok $(( $(date +%s) - s )) "pretrain/bf16.log"
  elif grep -q 'train.precision' "$RUNS/bf16.log" && grep -qi 'unknown' "$RUNS/bf16.log"; then
    record "pretrain bf16: 20 steps" skipped $(( $(date +%s) - s )) "this build's config has no train.precision yet"
  else
    tail -20 "$RUNS/bf16.log" >&2
    record "pretrain bf16: 20 steps" FAILED $(( $(date +%s) - s )) "pretrain/bf16.log"
  fi
  # The rank's GPU metrics: a training rank serves cnx_worker_gpu_* (NVML and
  # LibTorch's caching allocator) at /metrics (docs/operations.md, Metrics).
  s=$(date +%s)
  MPORT=$(( 39500 + RANDOM % 1000 ))
  worker "$RUNS/metrics.log" --set checkpoint.root="$RUNS/metrics" --max-steps 300 --resume none \
    --set metrics.enabled=true --set metrics.listen_host=127.0.0.1 --set metrics.worker_port=$MPORT &
  mpid=$!
  python3 - "$MPORT" "$mpid" "$RUNS/metrics.txt" <<'PY'
import os, re, sys, time, urllib.request
port, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
text = ""
for _ in range(240):
    try:
        text = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=5).read().decode()
        if re.search(r"^cnx_worker_gpu_allocated_bytes\{.*\} [1-9]", text, re.M):
            break
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        break
    time.sleep(0.5)
open(out, "w").write(text)
PY
  kill "$mpid" 2>/dev/null
  wait "$mpid" 2>/dev/null
  missing=""
  for m in memory_used_bytes memory_total_bytes utilization_ratio allocated_bytes reserved_bytes; do
    grep -q "^cnx_worker_gpu_$m{" "$RUNS/metrics.txt" 2>/dev/null || missing="$missing cnx_worker_gpu_$m"
  done
  if [ -z "$missing" ] && grep -q '^cnx_worker_gpu_allocated_bytes{.*} [1-9]' "$RUNS/metrics.txt"; then
    record "GPU metrics at /metrics" ok $(( $(date +%s) - s )) "$(grep -h -o 'GPU metrics: .*' "$RUNS/metrics.log" | head -1); pretrain/metrics.txt"
  else
    tail -20 "$RUNS/metrics.log" >&2
    record "GPU metrics at /metrics" FAILED $(( $(date +%s) - s )) "missing or zero:${missing:- allocated bytes} (pretrain/metrics.log, metrics.txt)"
  fi
elif [ "$BUILT" = 1 ] && [ -x "$WORKER" ]; then
  # Dry run: every command line must get as far as the device check.
  s=$(date +%s)
  bad=()
  for args in "--max-steps 6 --resume none" "--max-steps 3 --resume none" "--max-steps 6 --resume auto" \
    "--set train.precision=bf16 --max-steps 20 --resume none"; do
    # shellcheck disable=SC2086
    worker "$RUNS/dry.log" --set checkpoint.root="$RUNS/dry" $args
    rc=$?
    if [ "$rc" != 2 ] || ! grep -q "train.device: 'cuda' but no CUDA device is usable" "$RUNS/dry.log"; then
      if grep -q 'train.precision' "$RUNS/dry.log" && grep -qi 'unknown' "$RUNS/dry.log"; then
        record "pretrain bf16 command line" skipped 0 "this build's config has no train.precision yet"
        continue
      fi
      cat "$RUNS/dry.log" >&2
      bad+=("$args (exit $rc)")
    fi
  done
  # This flavour has no coordinator link: --coordinator is a usage error.
  worker "$RUNS/dry.log" --set checkpoint.root="$RUNS/dry" --coordinator 127.0.0.1:1 --max-steps 1
  rc=$?
  if [ "$rc" != 2 ] || ! grep -q -- "--coordinator: this cnx-worker was built without the coordinator link" "$RUNS/dry.log"; then
    cat "$RUNS/dry.log" >&2
    bad+=("--coordinator (exit $rc, expected 2 naming the flag)")
  fi
  if [ ${#bad[@]} = 0 ]; then
    record "pretrain command lines (up to the device check)" ok $(( $(date +%s) - s )) "config, flags and the store env accepted; each stopped at train.device=cuda with exit 2"
  else
    record "pretrain command lines (up to the device check)" FAILED $(( $(date +%s) - s )) "${bad[*]}"
  fi
else
  record pretrain skipped 0 "no cnx-worker built"
fi

# --- 6. benchmark -------------------------------------------------------------
BENCH="$BUILD/bench/cnx-fcmae-step-bench"
BUDGET_S=${CNX_GPU_CHECK_BUDGET_S:-540}  # no new benchmark run starts after this (the whole check: < 10 min)
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
