#!/usr/bin/env bash
# Every GPU claim of issue 11 in one run (< 8 min on one H100/H200) and one table: trainer tokens/s vs
# plain HF+peft (1B, 8B), 8B QLoRA peak memory, a real `home train --4bit` → registered → `home ask`,
# chat decode with full offload vs bare llama-cpp-python, a long chat's prefix kept across distillations
# aside, the 8B retrain loop from 1,000 logged turns.
#
#   bash bench/gpu_check.sh                   # on the GPU machine (from the repo root, .gpu/ carried)
#   bash bench/gpu_check.sh --only e2e,decode # some rows (tput,qlora,e2e,decode,long,retrain); --model F.gguf [--base HF_DIR] for a real model
#   bash bench/gpu_check.sh --cpu-smoke       # every row at tiny shapes on the CPU, ~2.5 min (CI runs it)
#
# The CPU smoke builds a tiny random Llama (2,048-token vocabulary) when a llama.cpp converter is at hand
# (.gpu/, or the one tests/families.py caches in ~/.cache/home-tests), else uses the default model for
# the `home train`, decode and retrain rows (~6 min then: its GGUF vocabulary is slow to read).
#
# What the GPU machine must have: python3 with torch (CUDA), transformers, peft, accelerate, pandas,
# pyarrow, xxhash, sentencepiece, scikit-build-core; nvcc, cmake, ninja. No network. The rest comes in
# .gpu/ (git-ignored; `bash bench/gpu_prepare.sh` fills it on a machine with PyPI, ~50 MiB):
#   .gpu/wheels/*.whl   trl, datasets, dill, multiprocess, bitsandbytes, liger-kernel, gguf, diskcache,
#                       platformdirs (CPython 3.12, manylinux x86-64): installed into $WORK/site
#   .gpu/llama-cpp-python-0.3.36-trimmed.tar.gz
#                       built here with CUDA (GGML_CUDA=on, CMAKE_CUDA_ARCHITECTURES = this GPU's, 90
#                       on Hopper) in the background while the throughput rows run; its
#                       convert_hf_to_gguf.py turns the random-weight models built here into GGUF
#   .gpu/smollm2-tokenizer.tar.gz   the default model's tokenizer, for those models
# Or: a CUDA llama-cpp-python already importable (then nothing is built); or, with HOME_GPU_BUILD=0,
# any llama-cpp-python importable (a CPU one on PYTHONPATH: the rows train on the GPU, verify on the CPU).
#
# Models: none is carried (the default model's wheel is 98 MB). A random-weight Llama of 8B shape
# (4096 × 32 layers, 128,256 vocabulary, f16 GGUF, ~16 GB, built on the GPU in seconds, converted in the
# background) serves the retrain loop and decode; a small one (256 × 4) serves `home train --4bit`,
# which takes --base (its transformers folder) beside the GGUF. `--model F.gguf --base DIR` uses a real
# model for those two rows instead.
#
# $WORK (default .gpu-work/, git-ignored) keeps the build, the models and gpu_check.log: a second call
# on a still-warm machine reuses them. Under the device tool, the table, its JSON and the log land in
# $OUT. Exit 0 all rows ran and met their goals, 3 a goal missed, 1 a row failed.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

for arg in "$@"; do
  if [ "$arg" = --cpu-smoke ]; then
    PY=${PYTHON:-.venv/bin/python}
    [ -x "$PY" ] || PY=python3
    exec env OMP_WAIT_POLICY=PASSIVE "$PY" bench/gpu_check.py "$@"
  fi
done

PY=${PYTHON:-python3}
WORK=${HOME_GPU_WORK:-$REPO/.gpu-work}
mkdir -p "$WORK"
say() { echo "gpu_check.sh: $*" >&2; }

# 1. The carried wheels, once per set of wheels.
SITE=$WORK/site
if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
  stamp=$(ls .gpu/wheels | sha256sum | cut -c1-16)
  if [ "$(cat "$SITE/.stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .gpu/wheels/*.whl \
      && echo "$stamp" >"$SITE/.stamp" || say "installing .gpu/wheels failed"
  fi
else
  say "no .gpu/wheels: expecting trl, datasets, bitsandbytes, liger-kernel, gguf, diskcache, platformdirs installed"
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"

# 2. llama-cpp-python with CUDA: importable already, built by an earlier call, or built now (background).
export HOME_GPU_LLAMA_STATUS=$WORK/llama.status
SRC=$(ls -d "$WORK"/llama_cpp_python-*/ 2>/dev/null | head -1)
SRC=${SRC%/}
if [ -z "$SRC" ] && compgen -G ".gpu/llama-cpp-python-*-trimmed.tar.gz" >/dev/null; then
  tar xzf "$(ls .gpu/llama-cpp-python-*-trimmed.tar.gz | tail -1)" -C "$WORK"
  SRC=$(ls -d "$WORK"/llama_cpp_python-*/ | head -1)
  SRC=${SRC%/}
fi
[ -n "$SRC" ] && export PYTHONPATH="$PYTHONPATH:$SRC" HOME_LLAMA_SRC="$SRC/vendor/llama.cpp"
offload() { "$PY" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)" 2>/dev/null; }

build_llama() {  # CMake directly (not pip): the build folder stays in $WORK for the next call
  local nvcc arch
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  [[ "$arch" =~ ^[0-9]+$ ]] || arch=90
  cmake -S "$SRC" -B "$WORK/llama-build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=on \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" -DCMAKE_CUDA_COMPILER="$nvcc" -DLLAVA_BUILD=OFF \
    -DSKBUILD_PLATLIB_DIR="$WORK/llama-platlib" \
    && cmake --build "$WORK/llama-build" -j "$(nproc)" \
    && cmake --install "$WORK/llama-build"   # the libraries land in $SRC/llama_cpp/lib
}

rm -f "$HOME_GPU_LLAMA_STATUS"
builder=""   # the background build's pid, when there is one
only=$(printf '%s\n' "$@" | grep -A1 -x -- --only | tail -1)
if [ -n "$only" ] && ! [[ "$only" =~ e2e|decode|retrain ]]; then
  echo "not needed: no llama.cpp row asked for" >"$HOME_GPU_LLAMA_STATUS"
elif offload; then
  echo "ok: a CUDA llama-cpp-python is importable" >"$HOME_GPU_LLAMA_STATUS"
elif [ "${HOME_GPU_BUILD:-1}" = 0 ] && "$PY" -c "import llama_cpp" 2>/dev/null; then
  # a short rerun: the CPU llama.cpp carried on PYTHONPATH verifies and serves `home ask`; no build
  echo "ok: no build asked for (HOME_GPU_BUILD=0): llama.cpp on the CPU" >"$HOME_GPU_LLAMA_STATUS"
elif [ -z "$SRC" ]; then
  echo "failed: no CUDA llama-cpp-python and no .gpu/llama-cpp-python-*-trimmed.tar.gz" >"$HOME_GPU_LLAMA_STATUS"
else
  say "building llama.cpp with CUDA in the background (log: $WORK/llama-build.log)"
  (
    t=$SECONDS
    if nice -n 5 bash -c "$(declare -f build_llama); SRC='$SRC' WORK='$WORK' build_llama" >"$WORK/llama-build.log" 2>&1 \
      && offload; then
      echo "ok: built with CUDA in $((SECONDS - t)) s" >"$HOME_GPU_LLAMA_STATUS.tmp"
    else
      echo "failed after $((SECONDS - t)) s: $(grep -m1 -iE 'error' "$WORK/llama-build.log" | cut -c1-200)" \
        >"$HOME_GPU_LLAMA_STATUS.tmp"
    fi
    mv "$HOME_GPU_LLAMA_STATUS.tmp" "$HOME_GPU_LLAMA_STATUS"
  ) &
  builder=$!
fi

"$PY" bench/gpu_check.py --work "$WORK" "$@"
code=$?
if [ -n "${OUT:-}" ] && [ -f "$WORK/llama-build.log" ]; then tail -c 2000000 "$WORK/llama-build.log" >"$OUT/llama-build.log"; fi
if [ -n "$builder" ] && kill -0 "$builder" 2>/dev/null; then  # the deadline came first
  say "llama.cpp build still running at the end (the device tool ends it; a next call's ninja resumes it)"
fi
exit $code
