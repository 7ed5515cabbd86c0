#!/usr/bin/env bash
# Fill .gpu/ (git-ignored) with what bench/gpu_check.sh needs on a GPU machine that reaches no registry.
#
# Why: the lent GPU machine has python3 3.12 with torch (CUDA), transformers, peft, accelerate, pandas,
# pyarrow, sentencepiece, scikit-build-core, cmake, ninja and nvcc, but no trl, datasets, bitsandbytes,
# liger-kernel, gguf or llama-cpp-python, and it cannot download them. Run this here (PyPI reachable),
# then carry `.gpu` with the working tree (64 MiB in all: the total is printed and checked).
#
#   bash bench/gpu_prepare.sh          # wheels for CPython 3.12 / manylinux x86-64, trimmed llama.cpp
#
# .gpu/wheels/*.whl        installed there with pip --no-index --no-deps (versions = this .venv's, tested)
# .gpu/smollm2-tokenizer.tar.gz   the default model's tokenizer (ChatML template), for the random-weight
#                          models gpu_check.sh builds there (the model's own wheel is 98 MB)
# .gpu/llama-cpp-python-0.3.36-trimmed.tar.gz
#                          the llama-cpp-python sdist with vendor/llama.cpp trimmed: no models/, docs,
#                          tests, examples, web UI, git data or unused GPU backends; kept: ggml (CPU,
#                          CUDA), src, include, common, vendor, tools/mtmd, convert_hf_to_gguf.py,
#                          conversion/, gguf-py/. gpu_check.sh unpacks it, builds it there with CUDA for
#                          sm_90, and converts random-weight models to GGUF with its convert_hf_to_gguf.py.
#                          A tarball: the tree is ~29 MB of text, ~7 MB packed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
DEST=.gpu
LLAMA_VERSION=0.3.36
LIMIT_MB=60   # the carry limit is 64 MiB for the whole working tree (Home's own files take ~2)
pip=("$PY" -m pip --disable-pip-version-check)

version() {  # the version this .venv runs, so the GPU machine gets what the CPU tests passed with
  "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1" 2>/dev/null || true
}
pin() {  # NAME → NAME==VERSION (this .venv's), or NAME==FALLBACK when it is not installed here
  local v; v=$(version "$1"); echo "$1==${v:-$2}"
}

# What the GPU image lacks (see the device notes: its package list), each at this .venv's version.
# datasets needs dill and multiprocess (pyarrow, pandas, xxhash, fsspec are in the image);
# llama-cpp-python needs diskcache; Home's vault needs platformdirs.
WHEELS=(
  "$(pin trl 1.16.0)" "$(pin datasets 5.2.0)" "$(pin dill 0.4.1)" "$(pin multiprocess 0.70.19)"
  "$(pin bitsandbytes 0.50.2)" "$(pin liger-kernel 0.8.5)" "$(pin gguf 0.19.0)"
  "$(pin diskcache 5.6.3)" "$(pin platformdirs 4.14.8)"
)

TARBALL="$DEST/llama-cpp-python-$LLAMA_VERSION-trimmed.tar.gz"
rm -rf "$DEST/wheels" "$DEST"/llama-cpp-python*
mkdir -p "$DEST/wheels"
grep -qx '/.gpu/' .gitignore 2>/dev/null || echo "dev: add /.gpu/ to .gitignore" >&2

echo "gpu_prepare: wheels for CPython 3.12, manylinux x86-64: ${WHEELS[*]}" >&2
"${pip[@]}" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --platform any -d "$DEST/wheels" "${WHEELS[@]}"

echo "gpu_prepare: llama-cpp-python $LLAMA_VERSION source (~76 MB download), trimming vendor/llama.cpp" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${pip[@]}" download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_VERSION" -d "$tmp"
tar xzf "$tmp"/llama_cpp_python-"$LLAMA_VERSION".tar.gz -C "$tmp"
src="$tmp/llama_cpp_python-$LLAMA_VERSION"
v="$src/vendor/llama.cpp"
rm -rf "$src"/{docs,examples,tests,docker,scripts,.git,.github} "$v"/.[!.]* \
  "$v"/{models,docs,tests,examples,benches,media,pocs,ci,skills,scripts,requirements,app,grammars,licenses} \
  "$v"/tools/{ui,server/public,server/webui,server/tests} "$v"/gguf-py/tests \
  "$v"/ggml/src/ggml-{openvino,webgpu,et,metal,hexagon,sycl,vulkan,opencl,cann,zdnn,zendnn,virtgpu}
find "$v" -name '*.md' -not -path '*/gguf-py/*' -delete
# Only what llama-cpp-python builds: tools/ holds the CLI programs (LLAMA_BUILD_TOOLS is off there), but
# tools/mtmd is built beside the library; keep tools/server too if still small (llama-server, later).
for d in "$v"/tools/*; do
  case "$(basename "$d")" in mtmd|server) ;; *) rm -rf "$d" ;; esac
done
[ "$(du -sm "$v/tools/server" | cut -f1)" -le 2 ] || rm -rf "$v/tools/server"

# The trimmed tree must still configure (a CPU configure here: seconds; it catches a missing folder).
if command -v cmake >/dev/null; then
  cmake -S "$src" -B "$tmp/configure" -DLLAMA_BUILD=ON -DGGML_NATIVE=OFF \
    -DCMAKE_BUILD_TYPE=Release >"$tmp/configure.log" 2>&1 \
    || { tail -20 "$tmp/configure.log" >&2; echo "gpu_prepare: the trimmed llama.cpp does not configure" >&2; exit 1; }
  echo "gpu_prepare: the trimmed llama.cpp configures (cmake, CPU)" >&2
fi

tar czf "$TARBALL" -C "$tmp" "llama_cpp_python-$LLAMA_VERSION"
# The random-weight models built there need a tokenizer: the default model's, read from its GGUF here.
"$PY" bench/gpu_models.py pack-tokenizer --out "$DEST/smollm2-tokenizer.tar.gz" >/dev/null
ls -l "$DEST"/wheels/*.whl "$TARBALL" "$DEST/smollm2-tokenizer.tar.gz" | awk '{printf "  %6.1f MB  %s\n", $5 / 1e6, $9}'
wheels_mb=$(du -sm "$DEST/wheels" | cut -f1)
tree_mb=$(du -sm "$TARBALL" | cut -f1)
total_mb=$(du -sm "$DEST" | cut -f1)
echo "gpu_prepare: .gpu/ holds ${total_mb} MiB (wheels ${wheels_mb}, llama-cpp-python source ${tree_mb} packed); limit ${LIMIT_MB}"
[ "$total_mb" -le "$LIMIT_MB" ] || { echo "gpu_prepare: over the carry limit" >&2; exit 1; }
