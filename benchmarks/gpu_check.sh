#!/usr/bin/env bash
# Run benchmarks/gpu_check.py on a lent GPU machine (docs/gpu.md). The repository travels there, its
# virtual environment does not: the machine's python3 has torch, numpy, scipy, scikit-learn, pluggy,
# click, tqdm, pyyaml and matplotlib, and the rest comes as wheels carried in .whl/ (fetched here with
# benchmarks/gpu_wheels.sh). The project itself runs from this checkout (PYTHONPATH), not installed.
# Usage: benchmarks/gpu_check.sh [gpu_check.py arguments, e.g. --out "$OUT/gpu"]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${PD_WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    || { echo "gpu_check.sh: installing the carried wheels in $WHEELS/ failed (see above)" >&2; exit 2; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
"$PY" - <<'PYEOF' || exit 2
import importlib.util, sys
need = {"torch": "torch", "kornia": "kornia", "kornia_rs": "kornia-rs", "click_default_group": "click-default-group",
        "pluggy": "pluggy", "click": "click", "scipy": "scipy", "sklearn": "scikit-learn", "yaml": "pyyaml",
        "tqdm": "tqdm", "matplotlib": "matplotlib", "pytest": "pytest", "diffusers": "diffusers (ld3m)"}
missing = [dist for module, dist in need.items() if importlib.util.find_spec(module) is None]
if missing:
    sys.exit(f"gpu_check.sh: missing {', '.join(missing)}: carry their wheels in .whl/ (benchmarks/gpu_wheels.sh, "
             "docs/gpu.md)")
PYEOF
exec "$PY" benchmarks/gpu_check.py "$@"
