"""The layout of ``pd_plugins.cli``: a package (group, public flags, one module per command family), import
boundaries checked on the source, the old private names still importable with a warning, and every command's
help consistent with its click object."""
from __future__ import annotations

import ast
import importlib
import re
import warnings
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import pd_plugins.cli as cli_pkg
from pd_plugins.cli import cli

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pd_plugins"
CLI_MODULES = ("group", "flags", "run_commands", "eval_commands", "info_commands", "sweep_commands",
               "prepare_commands")
FAMILIES = ("run_commands", "eval_commands", "info_commands", "sweep_commands", "prepare_commands")
PUBLIC = ("run_flags", "executor_flags", "build_config", "make_executor_from", "driver_output", "print_summary",
          "show_traceback", "execute_stages")


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Absolute module names a source file imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _is_cli(name: str) -> bool:
    return name == "pd_plugins.cli" or name.startswith("pd_plugins.cli.")


def _sources(under: Path):
    return sorted(p for p in under.rglob("*.py") if "__pycache__" not in p.parts)


def _defines(path: Path, func: str) -> bool:
    return any(isinstance(n, ast.FunctionDef) and n.name == func for n in ast.walk(ast.parse(path.read_text())))


def test_cli_is_a_package_with_one_module_per_role():
    assert Path(cli_pkg.__file__).name == "__init__.py"
    assert not (PKG / "cli.py").exists()
    for name in CLI_MODULES:
        assert (PKG / "cli" / f"{name}.py").is_file(), name
        importlib.import_module(f"pd_plugins.cli.{name}")
    assert cli is importlib.import_module("pd_plugins.cli.group").cli
    assert callable(cli_pkg.main)


def test_console_script_points_at_the_group():
    text = (ROOT / "setup.cfg").read_text()
    target = re.search(r"pd-run\s*=\s*(\S+)", text).group(1)
    module, attr = target.split(":")
    assert getattr(importlib.import_module(module), attr) is cli


def test_public_helpers_come_from_flags():
    flags = importlib.import_module("pd_plugins.cli.flags")
    for name in PUBLIC:
        obj = getattr(flags, name)
        assert callable(obj) and obj.__doc__, name
        assert not name.startswith("_") and name in flags.__all__
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert getattr(cli_pkg, name) is obj  # re-exported, no warning


def test_flag_decorators_add_the_shared_options():
    from pd_plugins.cli.flags import EXECUTOR_FLAGS, RUN_FLAGS, executor_flags, run_flags

    @click.command()
    @run_flags
    @executor_flags
    def probe(**params):
        """probe"""

    assert len(probe.params) == len(RUN_FLAGS) + len(EXECUTOR_FLAGS)
    names = [p.name for p in probe.params]
    assert len(set(names)) == len(names)
    assert {"pruner", "distiller", "keep", "config_file", "traceback"} <= set(names)
    assert {"executor", "workers", "address"} <= set(names)


def test_show_traceback_sets_the_flag_the_group_reads():
    from pd_plugins.cli.flags import show_traceback

    ctx = click.Context(cli)
    show_traceback(ctx, 1)
    assert ctx.meta["pd_traceback"] is True
    show_traceback(ctx, False)
    assert ctx.meta["pd_traceback"] is False


def test_no_module_outside_cli_depends_on_the_cli():
    """Core modules never import the CLI; command plugins (they implement ``register_commands``) use only the
    public ``pd_plugins.cli.flags``; ``python -m pd_plugins`` imports the group."""
    bad = []
    plugins_using_flags = []
    for path in _sources(PKG):
        rel = path.relative_to(PKG).as_posix()
        if rel.startswith("cli/"):
            continue
        used = {m for m in _imports(path) if _is_cli(m)}
        if not used:
            continue
        if rel == "__main__.py" and used <= {"pd_plugins.cli", "pd_plugins.cli.cli"}:
            continue
        if _defines(path, "register_commands") and all(m.startswith("pd_plugins.cli.flags") for m in used):
            plugins_using_flags.append(rel)
            continue
        bad.append(f"{rel}: {sorted(used)}")
    assert not bad, bad
    assert "default_plugins/commands.py" in plugins_using_flags


def test_no_private_cli_helper_imported_anywhere():
    bad = []
    for top in ("pd_plugins", "examples", "tests", "docs", "benchmarks"):
        for path in _sources(ROOT / top):
            if path == Path(__file__).resolve():  # imports a deprecated name on purpose
                continue
            for name in _imports(path):
                if _is_cli(name) and name.rsplit(".", 1)[-1].startswith("_"):
                    bad.append(f"{path.relative_to(ROOT)}: {name}")
    assert not bad, bad


def test_experiments_and_config_do_not_import_the_cli():
    for path in _sources(PKG / "experiments") + [PKG / "config.py"]:
        assert not {m for m in _imports(path) if _is_cli(m)}, path


def test_cli_imports_experiments_and_pipeline_only_lazily():
    for path in _sources(PKG / "cli"):
        eager = _imports(path, top_level_only=True)
        heavy = sorted(m for m in eager if m.split(".")[:2] in (["pd_plugins", "experiments"],
                                                                  ["pd_plugins", "pipeline"]) or m == "torch")
        assert not heavy, (path.name, heavy)


def test_config_files_are_loaded_in_config_only():
    owners = [p.relative_to(PKG).as_posix() for p in _sources(PKG) if _defines(p, "load_config_file")]
    assert owners == ["config.py"]
    assert "pd_plugins.config.load_config_file" in _imports(PKG / "experiments" / "sweep.py")
    assert "pd_plugins.config.load_config_file" in _imports(PKG / "cli" / "flags.py")


def test_deprecated_names_warn_and_resolve_to_the_moved_objects():
    assert cli_pkg._MOVED
    for old, (module, new) in cli_pkg._MOVED.items():
        path = module if "." in module else f"pd_plugins.cli.{module}"
        with pytest.warns(DeprecationWarning, match=re.escape(f"pd_plugins.cli.{old}")):
            obj = getattr(cli_pkg, old)
        assert obj is getattr(importlib.import_module(path), new), old


def test_deprecated_from_import_still_works():
    from pd_plugins.cli.flags import print_summary

    with pytest.warns(DeprecationWarning, match="print_summary"):
        from pd_plugins.cli import _print_summary
    assert _print_summary is print_summary
    with pytest.raises(AttributeError):
        cli_pkg._no_such_helper  # noqa: B018


def _commands(host) -> dict:
    """Every command the group offers, the plugins' included (they are added on the first parse)."""
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0, res.output
    return dict(cli.commands)


def test_every_family_command_is_reachable_and_documented(host):
    commands = _commands(host)
    family_commands = []
    for fam in FAMILIES:
        module = importlib.import_module(f"pd_plugins.cli.{fam}")
        assert module.COMMANDS, fam
        defined = {v for v in vars(module).values() if isinstance(v, click.Command)}
        listed = set(module.COMMANDS) | {sub for c in module.COMMANDS if isinstance(c, click.Group)
                                         for sub in c.commands.values()}  # a group's subcommands
        assert defined == listed, (fam, {c.name for c in defined ^ listed})
        family_commands += module.COMMANDS
    for cmd in family_commands:
        assert commands.get(cmd.name) is cmd, cmd.name
    assert len({c.name for c in family_commands}) == len(family_commands)
    assert "experts" in commands  # a built-in command plugin
    group_help = CliRunner().invoke(cli, ["--help"]).output
    for name, cmd in commands.items():
        assert cmd.help and cmd.help.strip(), name
        assert re.search(rf"^\s+{re.escape(name)}\*?\s+\S", group_help, re.M), name


def _help_flags(text: str) -> set[str]:
    section = text.split("\nOptions:", 1)[1]
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", section))


def _declared_flags(cmd: click.Command) -> set[str]:
    out = set()
    for param in cmd.params:
        if isinstance(param, click.Option) and not param.hidden:
            out.update(param.opts)
            out.update(param.secondary_opts)
    return out | {"-h", "--help"}


def test_help_lists_exactly_the_declared_options(host):
    commands = _commands(host)
    assert len(commands) >= 12
    for name, cmd in commands.items():
        res = CliRunner().invoke(cli, [name, "--help"])
        assert res.exit_code == 0, (name, res.output)
        assert " ".join(cmd.help.split("\n\n")[0].split()) in " ".join(res.output.split()), name
        shown = _help_flags(res.output)
        declared = _declared_flags(cmd)
        # help text may mention other flags (e.g. `-E` inside a sentence) only if they are declared too
        assert declared <= shown, (name, declared - shown)
        assert shown <= declared, (name, shown - declared)


def test_commands_share_the_run_and_executor_options(host):
    from pd_plugins.cli.flags import EXECUTOR_FLAGS, RUN_FLAGS

    def names(decorators):
        return {d(lambda: None).__click_params__[-1].name for d in decorators}

    run_names, exec_names = names(RUN_FLAGS), names(EXECUTOR_FLAGS)
    assert len(run_names) == len(RUN_FLAGS) and len(exec_names) == len(EXECUTOR_FLAGS)
    commands = _commands(host)
    for name in ("run", "prune", "distill", "config", "experts"):
        assert run_names <= {p.name for p in commands[name].params}, name
    for name in ("run", "prune", "distill", "experts", "eval"):
        assert exec_names <= {p.name for p in commands[name].params}, name
    assert not exec_names & {p.name for p in commands["config"].params}
