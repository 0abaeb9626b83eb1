"""The slow tests that .ci/run runs without ../shared must not need it: every test that reads the
shared real data sets carries the ``real_data`` marker (run only where the data is present)."""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SHARED_READERS = {"shared_file", "_shared", "SHARED_DATA"}


def _marks(fn: ast.FunctionDef) -> set[str]:
    out = set()
    for dec in fn.decorator_list:
        node = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(node, ast.Attribute):
            out.add(node.attr)
    return out


def _reads_shared(fn: ast.FunctionDef, helpers: set[str]) -> bool:
    names = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
    return bool(names & (SHARED_READERS | helpers))


def test_every_shared_data_test_is_marked_real_data():
    unmarked, found = [], 0
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        helpers = {f.name for f in funcs if not f.name.startswith("test_") and _reads_shared(f, set())}
        for fn in funcs:
            if fn.name.startswith("test_") and _reads_shared(fn, helpers):
                found += 1
                if "real_data" not in _marks(fn):
                    unmarked.append(f"{path.name}::{fn.name}")
    assert found >= 4  # mnist/fashion/cifar loaders, the memory probe, the MNIST pruner check
    assert not unmarked, f"tests reading ../shared/data without @pytest.mark.real_data: {unmarked}"
