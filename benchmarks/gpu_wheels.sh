#!/usr/bin/env bash
# Fetch, here, the wheels benchmarks/gpu_check.sh installs on a lent GPU machine (docs/gpu.md): what
# pd_plugins needs beyond that machine's image (its python3 is CPython 3.12 on x86-64 with torch), at the
# versions this checkout's environment uses. Writes .whl/ (ignored by git; carried with `carry: [".whl"]`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl
for dist in kornia kornia_rs click-default-group diffusers importlib_metadata; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$dist==$(version "$dist")"
done
ls -l .whl
