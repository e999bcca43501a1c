#!/usr/bin/env bash
# The prepared GPU check (issue 18, item 5), in two halves for a session lent a GPU machine.
#
#   bash scripts/device_check.sh prepare   # here: wheels the GPU image lacks, into .whl/
#   bash scripts/device_check.sh run       # there, from the repository root (carry .whl)
#
# The GPU image has torch, numpy, transformers, huggingface_hub, OpenCV and Pillow, but not
# pydantic, which the runtime's settings need; `prepare` downloads it (and its own needs) as
# CPython 3.12 manylinux wheels, the versions this checkout's venv runs. `run` installs them
# beside the image's packages, runs benchmarks/bench_cuda.py (XMem and SAM 2.1 tiny, 480x854,
# 3 objects, 30 frames, fp32 vs fp16) and renders RESULTS.md section 9; the JSON and
# RESULTS.md come back under $OUT. Checked without a GPU by the same import closure with the
# image's transformers 5.17 / huggingface_hub 1.33 (`bench_cuda.py --quick --device cpu`).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(pydantic pydantic_core annotated_types typing_inspection)

case "${1:-}" in
prepare)
    py=${PYTHON:-.venv/bin/python}
    grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
    rm -rf .whl && mkdir .whl
    pins=()
    for name in "${WHEELS[@]}"; do
        pins+=("$name==$("$py" -c "import importlib.metadata as m; print(m.version('$name'))")")
    done
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${pins[@]}"
    ls -l .whl
    echo "next: the device tool's run with carry [\".whl\"] and command 'bash scripts/device_check.sh run'"
    ;;
run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    python3 benchmarks/bench_cuda.py
    python3 benchmarks/run_all.py --render-only
    if [ -n "${OUT:-}" ]; then
        cp benchmarks/results/cuda.json benchmarks/RESULTS.md "$OUT/"
    fi
    ;;
*)
    echo "usage: bash scripts/device_check.sh prepare|run" >&2
    exit 2
    ;;
esac
