#!/usr/bin/env bash
# The GPU check in one go (about 7 minutes on one H100): the `gpu`-marked tests with junit XML, then
# `lbdt benchmark --device cuda` eager and compiled (batched, streaming, training step, sentences per frame),
# JSON out, and a summary with the issue-15 targets next to the numbers. Everything goes under OUTDIR.
#
#   benchmarks/gpu_check.sh OUTDIR        (PYTHON=... to pick the interpreter; default: python)
#
# Each step has its own time limit; a failing step is recorded and the next one still runs.
# Exit status: 0 when every step succeeded, 1 otherwise, 2 for bad arguments.
set -u

usage() {
    echo "usage: benchmarks/gpu_check.sh OUTDIR" >&2
    echo "  runs the gpu tests and lbdt benchmark --device cuda; writes junit XML, logs and JSON under OUTDIR" >&2
}
if [ "$#" -ne 1 ] || [ -z "$1" ] || [ "${1#-}" != "$1" ]; then
    usage
    exit 2
fi
if [ -e "$1" ] && [ ! -d "$1" ]; then
    echo "gpu_check.sh: OUTDIR $1 exists and is not a folder" >&2
    usage
    exit 2
fi
mkdir -p "$1" || { echo "gpu_check.sh: cannot create $1" >&2; exit 2; }
OUT=$(cd "$1" && pwd)
cd "$(dirname "$0")/.." || exit 2  # the repository root
PY=${PYTHON:-python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
failed=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log, record the status
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc seconds=$((SECONDS - start))" | tee -a "$OUT/steps.txt"
    [ "$rc" -eq 0 ] || failed=1
}

{ date -u; nvidia-smi; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"; \
  git rev-parse HEAD; } >"$OUT/environment.txt" 2>&1

# 1. the gpu-marked tests (CUDA vs CPU, bf16/fp16, training steps, DDP nccl, streaming, segment_many)
step tests 180 "$PY" -m pytest -q -rs -m gpu tests/test_gpu.py -p no:cacheprovider --junitxml="$OUT/gpu-tests.xml"

# 2. eager: batched and streaming inference, the training step, sentences per frame
step benchmark-eager 150 "$PY" -m lbdt.cli benchmark --device cuda --model lbdt4 --precision fp32,bf16 \
    --batch 1,32,64 --frames 128 --repeats 5 --train-step --train-batch 16 --sentences 1,4,16 \
    --sentence-batch 8 --out "$OUT/cuda-lbdt4-320-eager.json"

# 3. torch.compile (inductor, freezing): batched and streaming bf16
step benchmark-compile 210 "$PY" -m lbdt.cli benchmark --device cuda --model lbdt4 --precision bf16 \
    --batch 64 --frames 128 --repeats 5 --no-sentences --compile --out "$OUT/cuda-lbdt4-320-compile.json"

# 4. the numbers next to the targets (LBDT-4, bf16, 320x320, one GPU)
"$PY" - "$OUT" >"$OUT/summary.txt" 2>&1 <<'PYEOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
runs = {name: json.loads(p.read_text()) for name in ("eager", "compile")
        if (p := out / f"cuda-lbdt4-320-{name}.json").is_file()}
print("GPU:", next((r["machine"].get("gpu") for r in runs.values()), "no benchmark result"))
best = lambda rows, key: max((r[key] for r in rows), default=None)  # noqa: E731
for name, r in runs.items():
    batched = best([x for x in r["inference"] if x["path"] == "fast" and x["precision"] == "bf16"], "frames_per_s")
    stream = best([x for x in r["streaming"] if x["precision"] == "bf16"], "frames_per_s")
    train = best([x for x in r["train"] if x["precision"] == "bf16"], "samples_per_s")
    for what, value, target in [("batched frames/s", batched, 1000), ("streaming frames/s", stream, 150),
                                ("training frames/s", train, 400)]:
        if value is not None:
            print(f"{name:8s} bf16 {what:20s} {value:9.1f}  target >= {target}  "
                  f"{'met' if value >= target else 'NOT met'}")
    for ratio, by_e in r.get("sentence_ratios", {}).items():
        print(f"{name:8s} {ratio}: " + ", ".join(f"E={e} {v:.2f}x" for e, v in by_e.items()))
PYEOF
cat "$OUT/summary.txt"
echo "results in $OUT (steps.txt, gpu-tests.xml, *.log, *.json, summary.txt)"
exit "$failed"
