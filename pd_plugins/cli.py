"""``pd-run``: the command line. Heavy imports (torch, kornia) happen inside command bodies,
so ``pd-run --help`` and ``pd-run list`` stay fast."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import click
from click_default_group import DefaultGroup

from .errors import DataError, OptionsError, PdPluginsError, PluginLoadError

KIND_ALIASES = {
    "pruners": "pruner", "distillers": "distiller", "datasets": "dataset", "models": "model",
    "augmentations": "augmentation", "evaluators": "evaluator", "generators": "generator",
}


def _debug() -> bool:
    return os.environ.get("PD_DEBUG", "") not in ("", "0")


class PdGroup(DefaultGroup):
    """Default-command group that turns expected failures into one line and an exit code."""

    _plugins_added = False

    def main(self, *args, **kwargs):
        return super().main(*args, **kwargs)

    def _add_plugin_commands(self, ctx) -> None:
        if PdGroup._plugins_added:
            return
        PdGroup._plugins_added = True
        from .plugins import get_host

        try:
            get_host().add_commands(self)
        except PdPluginsError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)

    def parse_args(self, ctx, args):
        self._add_plugin_commands(ctx)
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PdPluginsError as exc:
            if _debug() or ctx.meta.get("pd_traceback"):
                raise
            msg = " ".join(str(exc).split("\n")[0:1]) or type(exc).__name__
            click.echo(f"Error: {msg}", err=True)
            ctx.exit(exc.exit_code)


def _version_message() -> str:
    from importlib.metadata import version, PackageNotFoundError

    from . import __version__

    parts = [f"pd-plugins {__version__}"]
    for dist in ("torch", "kornia", "pluggy", "click"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (missing)")
    return ", ".join(parts)


@click.group(cls=PdGroup, default="run", default_if_no_args=False,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(message=_version_message(), version="")
def cli():
    """Dataset distillation with pruning first.

    \b
    Quick start (embedded digits data, CPU, under a minute):
        pd-run --pruner random --distiller dm
    Inspect what is installed:
        pd-run list            pd-run show pruner el2n-window
    """


# ----------------------------------------------------------------------------------------
# config files

def load_config_file(path: str) -> dict:
    """Read a YAML, TOML or JSON config; a malformed file is one DataError line."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"config file not found: {p}")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            values = tomllib.loads(text)
        elif p.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"config file {p} is malformed: {first}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise DataError(f"config file {p} must hold a mapping of keys to values")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


# ----------------------------------------------------------------------------------------
# the run options, shared by run / prune / config

RUN_FLAGS = [
    click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML/TOML/JSON config; flags win."),
    click.option("--dataset", default="digits", show_default=True, help="dataset name (pd-run list datasets)."),
    click.option("--data-root", default=None, help="local path of the dataset (file or directory)."),
    click.option("--dataset-option", "dataset_option", multiple=True, metavar="KEY=VALUE", help="dataset option."),
    click.option("--pruner", default="none", show_default=True, help="pruner name, or none."),
    click.option("--keep", type=float, default=None, help="keep ratio in (0,1]; default: the distiller's recommended ratio."),
    click.option("-P", "--pruner-option", "pruner_option", multiple=True, metavar="KEY=VALUE", help="pruner option."),
    click.option("--mode", type=click.Choice(["pool", "init"]), default="pool", show_default=True,
                 help="pool: the pruned set replaces the real data; init: it only seeds the synthetic images."),
    click.option("--subset", default=None, type=click.Path(dir_okay=False),
                 help="CSV/JSON of source indices chosen elsewhere, used instead of a pruner."),
    click.option("--distiller", default="dm", show_default=True, help="distiller name, or none."),
    click.option("--ipc", type=int, default=10, show_default=True, help="synthetic images per class."),
    click.option("-D", "--distiller-option", "distiller_option", multiple=True, metavar="KEY=VALUE", help="distiller option."),
    click.option("--model", default="convnet", show_default=True, help="backbone for distillation and evaluation."),
    click.option("--model-option", "model_option", multiple=True, metavar="KEY=VALUE", help="backbone option."),
    click.option("--augmentation", default="dsa", show_default=True, help="augmentation name."),
    click.option("--evaluator", default="dsa-step", show_default=True, help="evaluation protocol, or none."),
    click.option("-E", "--evaluator-option", "evaluator_option", multiple=True, metavar="KEY=VALUE", help="evaluator option."),
    click.option("--eval-repeats", type=int, default=None, help="fresh networks trained per evaluation."),
    click.option("--budget", type=click.Choice(["auto", "paper", "quick"]), default="auto", show_default=True,
                 help="paper settings, or scaled-down 'quick' ones (auto: quick on digits only)."),
    click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True),
    click.option("--compile/--no-compile", "compile_", default=False, help="torch.compile where it pays."),
    click.option("--checkpoint-every", type=int, default=50, show_default=True, help="distiller checkpoint interval."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:i]."),
    click.option("--out", default=None, help="run directory (default: runs/<dataset>-<pruner>-<distiller>-...)."),
    click.option("--overwrite", is_flag=True, help="replace an existing run directory."),
    click.option("--json", "as_json", is_flag=True, help="print the summary as JSON."),
    click.option("--no-progress", is_flag=True, help="no progress bars."),
    click.option("--traceback", is_flag=True, help="show the full traceback on errors."),
]

# click parameter name -> RunConfig field
FIELD_OF = {
    "dataset": "dataset", "data_root": "data_root", "pruner": "pruner", "keep": "keep", "mode": "mode",
    "subset": "subset", "distiller": "distiller", "ipc": "ipc", "model": "model", "augmentation": "augmentation",
    "evaluator": "evaluator", "eval_repeats": "eval_repeats", "budget": "budget", "precision": "precision",
    "compile_": "compile", "checkpoint_every": "checkpoint_every", "seed": "seed", "device": "device", "out": "out",
}
MULTI_OF = {
    "dataset_option": "dataset_options", "pruner_option": "pruner_options", "distiller_option": "distiller_options",
    "model_option": "model_options", "evaluator_option": "evaluator_options",
}


def run_flags(fn):
    for opt in reversed(RUN_FLAGS):
        fn = opt(fn)
    return fn


def build_config(ctx: click.Context, params: dict, base: Optional[dict] = None):
    """RunConfig from (base values) < config file < explicit command-line flags."""
    from click.core import ParameterSource

    from .options import parse_key_values
    from .runner import RunConfig

    values: dict[str, Any] = dict(base or {})
    if params.get("config_file"):
        values.update(load_config_file(params["config_file"]))
    cfg_values = RunConfig.from_dict(values).to_dict() if values else RunConfig().to_dict()
    for pname, field in FIELD_OF.items():
        src = ctx.get_parameter_source(pname)
        explicit = src is not None and src not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
        if explicit or field not in values:
            cfg_values[field] = params[pname]
    for pname, field in MULTI_OF.items():
        merged = dict(cfg_values.get(field) or {})
        merged.update(parse_key_values(params.get(pname), flag="--" + pname.replace("_", "-")))
        cfg_values[field] = merged
    cfg_values["progress"] = not params.get("no_progress") and sys.stderr.isatty()
    return RunConfig.from_dict(cfg_values)


def _print_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    rows = []
    for key, value in summary.items():
        if key == "seconds":
            value = ", ".join(f"{k} {v:.1f}s" for k, v in value.items())
        elif key in ("acc_mean", "acc_std") and isinstance(value, float):
            value = f"{100 * value:.2f}%"
        elif isinstance(value, float):
            value = f"{value:.4g}"
        rows.append((key, str(value)))
    width = max(len(k) for k, _ in rows)
    click.echo("-" * (width + 40))
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")
    click.echo("-" * (width + 40))


def _execute(ctx, params: dict, stages, base: Optional[dict] = None) -> None:
    ctx.meta["pd_traceback"] = params.get("traceback", False)
    from .runner import Run

    cfg = build_config(ctx, params, base)
    if "distill" not in stages:
        cfg.distiller_options = {} if cfg.distiller == "none" else cfg.distiller_options
    run = Run(cfg, overwrite=params.get("overwrite", False))
    summary = run.execute(stages)
    if run.resolved["budget"] != "paper" and not params.get("as_json"):  # after the run: errors stay one line
        click.echo(f"budget '{run.resolved['budget']}': scaled-down settings, recorded in {run.out}/config.json", err=True)
    _print_summary(summary, params.get("as_json", False))


@cli.command("run")
@run_flags
@click.pass_context
def run_cmd(ctx, **params):
    """Prune, distill and evaluate (the default command)."""
    from .runner import STAGES

    _execute(ctx, params, STAGES)


@cli.command("prune")
@run_flags
@click.pass_context
def prune_cmd(ctx, **params):
    """Run the pruning stage alone (OUT/prune.pt); continue with `pd-run distill --from OUT`."""
    _execute(ctx, params, ("prune",))


@cli.command("distill")
@click.option("--from", "from_dir", required=True, type=click.Path(file_okay=False), help="a run directory with prune.pt.")
@run_flags
@click.pass_context
def distill_cmd(ctx, from_dir, **params):
    """Distill (and evaluate) from the pruned set of an earlier `pd-run prune` run."""
    import shutil

    from .io import read_json
    from .runner import load_run_config, STAGES

    src = Path(from_dir)
    old = load_run_config(src)
    if not (src / "prune.pt").exists():
        raise DataError(f"{src} has no finished prune stage (prune.pt)")
    resolved = read_json(src / "config.json", "run config").get("resolved", {})
    base = old.to_dict()
    base["keep"] = resolved.get("keep", old.keep)
    for key in ("distiller", "ipc", "distiller_options", "out", "evaluator", "eval_repeats"):
        base.pop(key, None)
    if ctx.get_parameter_source("out").name == "DEFAULT":
        params["out"] = f"{src}-{params['distiller']}-ipc{params['ipc']}"
    out = Path(params["out"])
    if not out.exists() or params.get("overwrite"):
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        shutil.copy2(src / "prune.pt", out / "prune.pt")
        man = read_json(src / "manifest.json", "manifest")
        from .io import atomic_write_json

        atomic_write_json(out / "manifest.json", {"stages": {"prune": man["stages"]["prune"]}, "from": str(src)})
        params["overwrite"] = False
    # settings fixed by the prune run (dataset, pruner, keep, seed, ...) come from `base`
    # unless given again on the command line
    _execute(ctx, params, STAGES, base=base)


@cli.command("config")
@run_flags
@click.pass_context
def config_cmd(ctx, **params):
    """Print the fully resolved config of a run without running it."""
    from .runner import Run

    cfg = build_config(ctx, params)
    run = Run(cfg)
    click.echo(json.dumps(run.config_json(), indent=2, default=str))


@cli.command("eval")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="recompute a finished evaluation.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--no-progress", is_flag=True)
@click.pass_context
def eval_cmd(ctx, run_dir, overwrite, as_json, no_progress):
    """Evaluate the distilled (or pruned) set of a run directory."""
    from .runner import Run, load_run_config

    cfg = load_run_config(run_dir)
    cfg.progress = not no_progress and sys.stderr.isatty()
    run = Run(cfg)
    if overwrite:
        man = run.manifest()
        man.get("stages", {}).pop("eval", None)
        from .io import atomic_write_json

        atomic_write_json(run.manifest_path, man)
    _print_summary(run.execute(), as_json)


# ----------------------------------------------------------------------------------------
# introspection (no torch import)

def _kind(word: str) -> str:
    w = word.lower()
    kind = KIND_ALIASES.get(w, w)
    from ._registry import KINDS

    if kind not in KINDS:
        raise OptionsError(f"unknown kind {word!r}; use one of: {', '.join(k + 's' for k in KINDS)}")
    return kind


@cli.command("list")
@click.argument("kind", required=False)
@click.option("--json", "as_json", is_flag=True)
def list_cmd(kind, as_json):
    """List registered strategies (all kinds, or one: pruners, distillers, ...)."""
    from ._registry import KINDS
    from .plugins import registries

    regs = registries()
    kinds = [_kind(kind)] if kind else list(KINDS)
    if as_json:
        click.echo(json.dumps({k + "s": [e.to_json() for e in regs[k].entries()] for k in kinds}, indent=2))
        return
    for k in kinds:
        click.echo(f"{k}s:")
        for e in regs[k].entries():
            alias = f" (aliases: {', '.join(e.aliases)})" if e.aliases else ""
            origin = "" if e.dist in ("pd-plugins", "") else f"  [{e.origin()}]"
            click.echo(f"  {e.name:<14} {e.summary}{alias}{origin}")


@cli.command("show")
@click.argument("kind")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def show_cmd(kind, name, as_json):
    """Show one strategy: summary, documentation and its options (type, default, help)."""
    from .options import describe
    from .plugins import registries

    entry = registries()[_kind(kind)].get(name)
    rows = describe(entry.options_class())
    obj = entry.load()
    budgets = getattr(obj, "budgets", {}) or {}
    if as_json:
        click.echo(json.dumps({**entry.to_json(), "doc": entry.doc(), "options": rows, "budgets": budgets},
                              indent=2, default=str))
        return
    click.echo(f"{entry.kind} {entry.name}  ({entry.origin()})")
    click.echo(f"  {entry.summary}")
    click.echo("")
    for line in entry.doc().splitlines():
        click.echo(f"  {line}")
    click.echo("\noptions:")
    if not rows:
        click.echo("  (none)")
    for r in rows:
        click.echo(f"  {r['name']:<16} {r['type']:<14} default={r['default']!r}  {r['help']}")
    for bname, overrides in budgets.items():
        click.echo(f"\nbudget '{bname}' overrides: {json.dumps(overrides)}")


@cli.command("plugins")
@click.option("--all", "show_all", is_flag=True, help="include the built-in plugins.")
@click.option("--hook", default=None, help="only plugins implementing this hook.")
@click.option("--requirements", is_flag=True, help="print name==version lines.")
def plugins_cmd(show_all, hook, requirements):
    """List loaded plugin packages as JSON (and any that failed to load)."""
    from .plugins import get_host

    host = get_host()
    host.registries()
    items = host.plugin_list(include_builtin=show_all)
    if hook:
        items = [p for p in items if hook in p["hooks"]]
    if requirements:
        for dist in sorted({(p["dist"], p["version"]) for p in items if p["dist"]}):
            click.echo(f"{dist[0]}=={dist[1]}")
        return
    failed = [f.__dict__ for f in host.failures]
    click.echo(json.dumps({"plugins": items, "failed": failed}, indent=2))


def main() -> None:  # pragma: no cover - console entry
    cli()


if __name__ == "__main__":  # pragma: no cover
    cli()
