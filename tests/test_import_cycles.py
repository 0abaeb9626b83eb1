"""No import cycles in pd_plugins, counting lazy (function-level) and TYPE_CHECKING imports: a new
circle fails here with its path. The checker itself is tested on tiny fake packages."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pd_plugins._devtools import import_cycles
from pd_plugins._devtools.import_cycles import find_cycles, import_graph, main, report

PACKAGE = Path(import_cycles.__file__).resolve().parents[1]


def test_pd_plugins_has_no_import_cycles():
    cycles, text = report(PACKAGE)
    assert not cycles, text
    assert len(import_graph(PACKAGE)) > 50  # the whole package was read, not an empty folder


def _package(root: Path, files: dict[str, str], name: str = "fake") -> Path:
    """Write ``files`` (relative path -> source) as package ``name`` under ``root``; every folder gets an ``__init__``."""
    pkg = root / name
    for rel, source in {"__init__.py": "", **files}.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in path.relative_to(pkg).parents:
            (pkg / folder / "__init__.py").touch()
        path.write_text(textwrap.dedent(source))
    return pkg


def test_a_cycle_through_lazy_and_type_checking_imports_is_reported_as_a_path(tmp_path, capsys):
    pkg = _package(tmp_path, {
        "a.py": "from fake import b\n",
        "b.py": "def f():\n    from . import c\n",
        "c.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import fake.a\n",
        "d.py": "import fake.a\n",  # depends on the cycle without being on it
    })
    cycles, text = report(pkg)
    assert cycles == [["fake.a", "fake.b", "fake.c", "fake.a"]]
    assert "fake.a -> fake.b -> fake.c -> fake.a" in text
    assert "fake/b.py:2 (function)" in text and "fake/c.py:4 (type-checking)" in text and "fake/a.py:1\n" in text
    assert main([str(pkg)]) == 1
    assert "fake.a -> fake.b -> fake.c -> fake.a" in capsys.readouterr().out


def test_relative_and_submodule_imports_resolve_to_the_modules_they_name(tmp_path):
    pkg = _package(tmp_path, {
        "sub/x.py": "from ..y import thing\nfrom . import z\nimport os, json\n",
        "sub/z.py": "from fake.sub import x as _x\n",  # a submodule named in a from-import
        "y.py": "thing = 1\nfrom fake.sub import helper\n",  # `helper` is not a module: the edge is to fake.sub
        "sub/__init__.py": "helper = 2\n",
    })
    graph = import_graph(pkg)
    assert {i.target for i in graph["fake.sub.x"]} == {"fake.y", "fake.sub.z"}  # stdlib imports are not edges
    assert {i.target for i in graph["fake.sub.z"]} == {"fake.sub.x"}
    assert {i.target for i in graph["fake.y"]} == {"fake.sub"}
    assert find_cycles(graph) == [["fake.sub.x", "fake.sub.z", "fake.sub.x"]]


def test_implicit_parent_packages_and_self_imports_are_not_cycles(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "from fake.inner import api\n",
        "inner/api.py": "import fake.inner.api\nfrom fake.inner import util\n",  # runs fake/__init__ implicitly
        "inner/util.py": "VALUE = 1\n",
    })
    cycles, text = report(pkg)
    assert cycles == [] and text == f"no import cycles among 4 modules of {pkg.name}"
    assert main([str(pkg)]) == 0


def test_every_edge_on_a_cycle_is_in_some_reported_path(tmp_path):
    pkg = _package(tmp_path, {  # one component with two circles through a, plus a separate pair
        "a.py": "import fake.b\nimport fake.c\n",
        "b.py": "import fake.a\n",
        "c.py": "def later():\n    import fake.a\n",
        "p.py": "import fake.q\n",
        "q.py": "import fake.p\n",
    })
    cycles = find_cycles(import_graph(pkg))
    assert sorted(cycles) == [["fake.a", "fake.b", "fake.a"], ["fake.a", "fake.c", "fake.a"],
                              ["fake.p", "fake.q", "fake.p"]]


def test_a_folder_without_init_is_refused(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "is not a package" in capsys.readouterr().err


@pytest.mark.parametrize("guard", ["TYPE_CHECKING", "typing.TYPE_CHECKING"])
def test_the_else_branch_of_a_type_checking_guard_is_a_module_level_import(tmp_path, guard):
    pkg = _package(tmp_path, {
        "a.py": f"import typing\nfrom typing import TYPE_CHECKING\nif {guard}:\n    import fake.b\nelse:\n    import fake.c\n",
        "b.py": "", "c.py": "",
    })
    where = {i.target: i.where for i in import_graph(pkg)["fake.a"]}
    assert where == {"fake.b": "type-checking", "fake.c": "module"}
