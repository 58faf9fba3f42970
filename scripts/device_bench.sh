#!/usr/bin/env bash
# The GPU run, offline: MLX's CUDA build against torch CUDA on an NVIDIA machine (CUDA 13).
#
#   scripts/device_bench.sh [OUT]        # results in OUT (default: $OUT, else ./device_results)
#
# 1. Joins wheels that arrived split (<name>.whl.part-aa, .part-ab, ... or <name>.whl.000, ...:
#    the parts of one wheel sort in order) in .whl/ (git-ignored; WHEELS=... elsewhere), and
#    installs every wheel there (mlx, mlx-cuda-13, mlx-data) with pip --no-index --no-deps
#    into SITE (default /tmp/site, where torch with CUDA, transformers and the rest already
#    are). Without wheels it uses the installed mlx.
# 2. Checks that MLX and torch both see a GPU. Without one it says so, runs the CPU checks
#    (the tiny benchmark) and exits 0.
# 3. With a GPU: the GPU-relevant tests (MLX kernels, attention, loss, generation, the torch
#    twin, the bench harness) and `mlx-caption bench --quick` against torch CUDA, half
#    precision included, each under a time limit so that the whole run stays under 8 minutes.
#
# Writes OUT/device_bench.log, OUT/device_bench.json (what ran, versions, GPU, timings,
# results), OUT/tests.xml and the benchmark's bench_quick.{json,md,png} (bench_tiny.* without
# a GPU). Exits non-zero only when a step that ran on the GPU failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-${OUT:-$PWD/device_results}}"
WHEELS="${WHEELS:-$ROOT/.whl}"
SITE="${SITE:-/tmp/site}"
PY="${PYTHON:-python3}"
TEST_LIMIT="${TEST_LIMIT:-180}"    # seconds for the tests
BENCH_LIMIT="${BENCH_LIMIT:-240}"  # seconds for bench --quick
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/device_bench.log"
: >"$LOG"
START=$(date +%s)

log() { echo "[device_bench] $*" | tee -a "$LOG" >&2; }

# ---------------------------------------------------------------- 1. wheels
join_parts() {
    # Every "<wheel>.whl.<suffix>" group becomes "<wheel>.whl" (its parts in sorted order).
    local part base
    for part in "$WHEELS"/*.whl.*; do
        [ -e "$part" ] || continue
        base="${part%.whl.*}.whl"
        [ -e "$base" ] && continue
        log "joining $(basename "$base") from its parts"
        # shellcheck disable=SC2046
        cat $(printf '%s\n' "$base".* | LC_ALL=C sort) >"$base.tmp" && mv "$base.tmp" "$base"
        if ! "$PY" -m zipfile -t "$base" >/dev/null 2>&1; then
            log "error: $(basename "$base") joined from its parts is not a valid wheel"
            rm -f "$base"
            return 1
        fi
    done
}

install_wheels() {
    local wheels=()
    for w in "$WHEELS"/*.whl; do [ -e "$w" ] && wheels+=("$w"); done
    if [ ${#wheels[@]} -eq 0 ]; then
        log "no wheels in $WHEELS: using the installed mlx"
        return 0
    fi
    log "installing ${#wheels[@]} wheel(s) into $SITE: $(for w in "${wheels[@]}"; do basename "$w"; done | tr '\n' ' ')"
    mkdir -p "$SITE"
    "$PY" -m pip install --quiet --no-index --no-deps --upgrade --target "$SITE" "${wheels[@]}" \
        >>"$LOG" 2>&1
}

join_parts || exit 1
install_wheels || { log "error: pip could not install the wheels (see $LOG)"; exit 1; }
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg

# ---------------------------------------------------------------- 2. devices
"$PY" - "$OUT/devices.json" <<'EOF' 2>>"$LOG"
import json, sys
import mlx_caption  # noqa: F401  (the BLAS loader runs before mlx.core)
import mlx.core as mx
info = {"mlx_device": str(mx.default_device()), "mlx_gpu": mx.default_device().type == mx.DeviceType.gpu}
try:
    import torch
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.cuda.is_available()
    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
except ImportError as err:
    info["torch"], info["torch_cuda"], info["gpu"] = None, False, None
    info["torch_error"] = str(err)
if info["mlx_gpu"]:
    a = mx.random.normal((256, 256))
    mx.eval(a @ a)  # a kernel actually runs
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(json.dumps(info))
EOF
DEVICES_RC=$?
GPU=$("$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print('yes' if d['mlx_gpu'] and d['torch_cuda'] else 'no')" "$OUT/devices.json" 2>/dev/null || echo no)
command -v nvidia-smi >/dev/null && nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1

summary() {  # name status seconds
    "$PY" - "$OUT/device_bench.json" "$@" <<'EOF'
import json, os, sys
path, name, status, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
data = json.load(open(path)) if os.path.exists(path) else {"steps": {}}
data["steps"][name] = {"status": status, "seconds": seconds}
devices = os.path.join(os.path.dirname(path), "devices.json")
if os.path.exists(devices):
    data["devices"] = json.load(open(devices))
json.dump(data, open(path, "w"), indent=1)
EOF
}

timed() {  # name limit command...: run with a time limit, record status and seconds
    local name="$1" limit="$2" t0 rc
    shift 2
    t0=$(date +%s)
    log "$name (at most ${limit}s): $*"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    summary "$name" "$([ $rc -eq 0 ] && echo ok || { [ $rc -eq 124 ] && echo timeout || echo "failed ($rc)"; })" "$(($(date +%s) - t0))"
    return $rc
}

if [ "$DEVICES_RC" -ne 0 ] || [ "$GPU" != yes ]; then
    log "no GPU here (MLX: $(grep -o '"mlx_device": "[^"]*"' "$OUT/devices.json" 2>/dev/null || echo unknown)); running the CPU checks only"
    timed cpu_checks 300 "$PY" -m mlx_caption.cli bench --tiny --only encoder train --repeats 1 --out "$OUT"
    summary total "no GPU" "$(($(date +%s) - START))"
    log "done: no GPU; the CPU checks' results in $OUT"
    exit 0
fi

# ---------------------------------------------------------------- 3. the GPU run
log "GPU: $(cat "$OUT/devices.json")"
FAILED=0
cd "$ROOT" || exit 1
timed gpu_tests "$TEST_LIMIT" env CI=true "$PY" -m pytest -q -p no:cacheprovider -m "not slow and not browser" \
    --junitxml "$OUT/tests.xml" \
    tests/test_attention.py tests/test_loss.py tests/test_decoder.py tests/test_generate.py \
    tests/test_captioner.py tests/test_torch_twin.py tests/test_bridge.py tests/test_bench.py \
    || FAILED=1
timed bench_quick "$BENCH_LIMIT" "$PY" -m mlx_caption.cli bench --quick --out "$OUT" || FAILED=1
summary total "$([ $FAILED -eq 0 ] && echo ok || echo failed)" "$(($(date +%s) - START))"
log "done in $(($(date +%s) - START)) s: results in $OUT"
exit $FAILED
