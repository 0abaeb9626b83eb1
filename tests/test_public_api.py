"""The public API: ``import pd_plugins`` is cheap and gives every public name; the guide covers them all."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import pd_plugins

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", pd_plugins.__all__)
def test_every_public_name_resolves(name):
    value = getattr(pd_plugins, name)
    assert value is not None
    if name in pd_plugins._EXPORTS:  # re-exported from its module, the very same object
        import importlib

        assert value is getattr(importlib.import_module(pd_plugins._EXPORTS[name]), name)


def test_public_names_are_unique_and_listed_in_dir():
    assert len(set(pd_plugins.__all__)) == len(pd_plugins.__all__)
    assert set(pd_plugins.__all__) <= set(dir(pd_plugins))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        pd_plugins.NoSuchName  # noqa: B018


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PD_LOAD_PLUGINS": ""})
    return set(out.stdout.split())


def test_importing_pd_plugins_does_not_import_torch():
    mods = _modules_after("import pd_plugins")
    assert "pd_plugins" in mods and "torch" not in mods
    # names a plugin's registering module uses stay light too
    mods = _modules_after("from pd_plugins import hookimpl, Pruner, ScorePruner, Distiller, option, OptionsError, "
                          "RunConfig, SelectionDistiller, Register")
    assert "torch" not in mods and "pd_plugins.strategies" in mods
    # ... while a heavy name imports torch when (and only when) it is asked for
    assert "torch" in _modules_after("import pd_plugins; pd_plugins.embed_dataset")


def test_the_guide_mentions_every_public_name():
    guide = (ROOT / "docs" / "plugins.md").read_text()
    missing = [n for n in pd_plugins.__all__ if not re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", guide)]
    assert not missing, f"docs/plugins.md does not mention {missing}"


def test_readme_links_the_guide():
    assert "docs/plugins.md" in (ROOT / "README.md").read_text()
