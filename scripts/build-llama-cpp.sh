#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, llama-server, llama-quantize and llama-perplexity from the source distribution of
# llama-cpp-python 0.3.36 on PyPI (its vendored llama.cpp), Release, native CPU, into
# vendor/llama.cpp/build (ignored by git). Used to compare Apus with llama.cpp side by side.
# Usage: scripts/build-llama-cpp.sh [avx2]
# With `avx2`, llama-bench alone, limited to AVX2 (no AVX-512 even where the CPU has it), into
# vendor/llama.cpp/build-avx2: the partner of `apus bench --kernels avx2` on an AVX-512 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
root=vendor
level=${1:-native}
case $level in native | avx2) ;; *) echo "usage: $0 [avx2]" >&2; exit 2 ;; esac
if [ "$level" = avx2 ]; then
    bin="$root/llama.cpp/build-avx2/bin"
    [ -x "$bin/llama-bench" ] && { echo "$bin"; exit 0; }
else
    bin="$root/llama.cpp/build/bin"
    if [ -x "$bin/llama-bench" ] && [ -x "$bin/llama-server" ] && [ -x "$bin/llama-quantize" ] && [ -x "$bin/llama-perplexity" ]; then
        echo "$bin"
        exit 0
    fi
fi
command -v cmake >/dev/null 2>&1 || { apt-get update >&2 && apt-get install -y cmake >&2; }
mkdir -p "$root"
if [ ! -d "$root/llama.cpp" ]; then
    # Only this package from source: with `:all:`, pip would also build its build tools (cmake, ninja) from source.
    python3 -m pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d "$root/sdist" >&2
    tar -xzf "$root"/sdist/llama_cpp_python-0.3.36.tar.gz -C "$root"
    mv "$root/llama_cpp_python-0.3.36/vendor/llama.cpp" "$root/llama.cpp"
    rm -rf "$root/llama_cpp_python-0.3.36"
fi
if [ "$level" = avx2 ]; then
    cmake -S "$root/llama.cpp" -B "$root/llama.cpp/build-avx2" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
        -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
    cmake --build "$root/llama.cpp/build-avx2" --config Release -j "$(nproc)" --target llama-bench >&2
else
    cmake -S "$root/llama.cpp" -B "$root/llama.cpp/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
    cmake --build "$root/llama.cpp/build" --config Release -j "$(nproc)" --target llama-bench llama-server llama-quantize llama-perplexity >&2
fi
echo "$bin"
