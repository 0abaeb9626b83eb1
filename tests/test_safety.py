"""Source scan: no unsafe deserialisation or dynamic code execution in the package.

Parses every ``.py`` file under ``pd_plugins/``, ``examples/`` and ``benchmarks/`` and
flags ``torch.load`` without ``weights_only=True``, any use of ``pickle``-family modules,
builtin ``eval``/``exec``, and ``allow_pickle=True``. Nothing is whitelisted.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("pd_plugins", "examples", "benchmarks")
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def findings(source: str, where: str = "<src>") -> list[str]:
    """Every unsafe construct in ``source`` as ``where:line: what``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(n.split(".")[0] in UNSAFE_MODULES for n in names):
                out.append(f"{where}:{line}: imports {names}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            if name.endswith("torch.load") or name == "load" and isinstance(node.func, ast.Name):
                if not _is_true(kw.get("weights_only")):
                    out.append(f"{where}:{line}: {name}( without weights_only=True")
            if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec", "compile", "__import__"):
                out.append(f"{where}:{line}: builtin {node.func.id}(")
            if _is_true(kw.get("allow_pickle")):
                out.append(f"{where}:{line}: allow_pickle=True")
            if name.split(".")[0] in UNSAFE_MODULES:
                out.append(f"{where}:{line}: {name}(")
    return out


def _files():
    for top in SCANNED:
        yield from sorted((ROOT / top).rglob("*.py"))


def test_scan_covers_the_package():
    files = [p.relative_to(ROOT).as_posix() for p in _files()]
    assert "pd_plugins/io.py" in files and "pd_plugins/cli/__init__.py" in files and len(files) > 30


def test_no_unsafe_calls_in_source():
    bad = []
    for path in _files():
        bad += findings(path.read_text(), path.relative_to(ROOT).as_posix())
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("snippet", [
    "import torch\nx = torch.load('f.pt')\n",
    "import torch\nx = torch.load('f.pt', weights_only=False)\n",
    "import pickle\n",
    "from pickle import loads\n",
    "y = eval(user_text)\n",
    "exec(code)\n",
    "import numpy as np\nnp.load('a.npz', allow_pickle=True)\n",
])
def test_scanner_catches_unsafe_snippets(snippet):
    assert findings(snippet)


@pytest.mark.parametrize("snippet", [
    "import torch\nx = torch.load('f.pt', map_location='cpu', weights_only=True)\n",
    "net.eval()\n",
    "import numpy as np\nnp.load('a.npz', allow_pickle=False)\n",
    "msg = 'contains object (pickled) arrays'\n",
])
def test_scanner_allows_safe_snippets(snippet):
    assert not findings(snippet)
