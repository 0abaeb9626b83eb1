"""docs/plugins.md: its code runs, its strategies pass the conformance kit, its hook reference matches hookspecs.py."""
from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
FILE = re.compile(r"^# file: (\S+)\n")


def guide_blocks() -> list[str]:
    return FENCE.findall(GUIDE.read_text())


def hookspec_signatures() -> dict[str, str]:
    """``name(param: annotation, ...) -> return`` of every hook in pd_plugins.hookspecs, as written there."""
    from pd_plugins import hookspecs

    out = {}
    for name, fn in vars(hookspecs).items():
        if callable(fn) and hasattr(fn, "pd_plugins_spec"):
            sig = inspect.signature(fn)
            params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
            out[name] = f"{name}({params}) -> {sig.return_annotation}"
    return out


def test_every_hook_is_documented_with_its_signature():
    documented = re.findall(r"^#### `(\w+\(.*\) -> .*)`$", GUIDE.read_text(), re.M)
    specs = hookspec_signatures()
    assert len(specs) == 11
    by_name = {d.split("(", 1)[0]: d for d in documented}
    assert sorted(by_name) == sorted(specs), "the guide documents other hooks than hookspecs.py"
    for name, sig in specs.items():
        assert by_name[name] == sig, f"{name}: the guide says {by_name[name]!r}, hookspecs.py {sig!r}"


def test_the_signature_check_can_fail(monkeypatch):
    from pd_plugins import hookspecs

    def on_log(step: int, metrics: dict) -> None:  # a hook that lost its context
        """x"""

    on_log.pd_plugins_spec = hookspecs.on_log.pd_plugins_spec
    monkeypatch.setattr(hookspecs, "on_log", on_log)
    with pytest.raises(AssertionError, match="on_log"):
        test_every_hook_is_documented_with_its_signature()


@pytest.fixture
def guide_package(tmp_path, monkeypatch, host):
    """The guide's files written under tmp_path (importable), its other blocks in order, in tmp_path."""
    files: dict[str, str] = {}
    snippets = []
    for block in guide_blocks():
        m = FILE.match(block)
        if m:
            files[m.group(1)] = files.get(m.group(1), "") + block[m.end():]
        else:
            snippets.append(block)
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield files, snippets
    for mod in [m for m in sys.modules if m == "pd_plugins_mine" or m.startswith("pd_plugins_mine.")]:
        del sys.modules[mod]


def test_guide_code_runs(guide_package):
    files, snippets = guide_package
    assert set(files) == {"pd_plugins_mine/__init__.py", "pd_plugins_mine/impl.py"}
    assert len(snippets) == 3  # use it, the command, test it
    namespace: dict = {"__name__": "guide"}
    for i, code in enumerate(snippets):
        exec(compile(code, f"{GUIDE.name}:snippet-{i}", "exec"), namespace)
    assert namespace["summary"]["acc_mean"] > 1 / 3
    assert "score cache" in namespace["report"].checked


def test_guide_strategies_pass_the_kit(guide_package):
    """What the guide writes passes check_pruner/check_distiller, checked here independently of its own snippet."""
    from pd_plugins.testing import check_distiller, check_pruner

    impl = importlib.import_module("pd_plugins_mine.impl")
    pruner = check_pruner(impl.PrototypePruner, {"epochs": 2, "direction": "easy"})
    assert {"options", "bad option value", "contracts", "result", "determinism", "score cache"} <= set(pruner.checked)
    moments = check_distiller(impl.MomentMatching, {"iterations": 3, "batch_real": 4, "log_every": 1})
    assert {"options", "bad option value", "contracts", "result", "determinism", "resume"} <= set(moments.checked)
    typical = check_distiller(impl.TypicalCoreset)
    assert "result" in typical.checked and "resume" in typical.skipped


def test_guide_pruner_keeps_the_prototype_extremes(guide_package, tiny_dataset, run_context):
    import torch

    impl = importlib.import_module("pd_plugins_mine.impl")
    cls = impl.PrototypePruner
    hard = cls(cls.resolve_options({"epochs": 2})).prune(tiny_dataset, 0.5, run_context)
    easy = cls(cls.resolve_options({"epochs": 2, "direction": "easy"})).prune(tiny_dataset, 0.5, run_context)
    assert easy.meta["scoring"]["cache"] == "hit"  # the direction only selects: the scores were reused
    assert torch.equal(hard.scores, easy.scores)
    for c, pos in enumerate(tiny_dataset.by_class()):
        k_hard = [p for p in hard.keep.tolist() if p in pos.tolist()]
        k_easy = [p for p in easy.keep.tolist() if p in pos.tolist()]
        assert len(k_hard) == len(k_easy) == 5 and not set(k_hard) & set(k_easy)
        assert hard.scores[k_hard].min() >= easy.scores[k_easy].max()
