"""The introspection commands: ``list``, ``show`` and ``plugins``. They never import torch."""
from __future__ import annotations

import json

import click

from pd_plugins.errors import OptionsError
from pd_plugins.strategies import BUDGET_BASE, BUDGETS

KIND_ALIASES = {
    "pruners": "pruner", "distillers": "distiller", "datasets": "dataset", "models": "model",
    "augmentations": "augmentation", "evaluators": "evaluator", "generators": "generator",
}


def _kind(word: str) -> str:
    w = word.lower()
    kind = KIND_ALIASES.get(w, w)
    from pd_plugins._registry import KINDS

    if kind not in KINDS:
        raise OptionsError(f"unknown kind {word!r}; use one of: {', '.join(k + 's' for k in KINDS)}")
    return kind


@click.command("list")
@click.argument("kind", required=False)
@click.option("--json", "as_json", is_flag=True)
def list_cmd(kind, as_json):
    """List registered strategies (all kinds, or one: pruners, distillers, ...)."""
    from pd_plugins._registry import KINDS
    from pd_plugins.plugins import registries

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
            if e.replaces:
                origin = f"  [{e.origin()}, replaces {e.replaces}]"
            click.echo(f"  {e.name:<14} {e.summary}{alias}{origin}")


@click.command("show")
@click.argument("kind")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def show_cmd(kind, name, as_json):
    """Show one strategy: summary, documentation and its options (type, default, help)."""
    from pd_plugins.options import describe
    from pd_plugins.plugins import registries

    entry = registries()[_kind(kind)].get(name)
    rows = describe(entry.options_class())
    obj = entry.load()
    budgets = getattr(obj, "budgets", {}) or {}
    if hasattr(obj, "budget_overrides"):  # the effective overrides (cpu starts from quick's)
        budgets = {b: obj.budget_overrides(b) for b in BUDGETS if b != "paper"}
    paper_mode = {"paper_mode": obj.paper_mode} if entry.kind == "pruner" else {}
    if as_json:
        click.echo(json.dumps({**entry.to_json(), **paper_mode, "doc": entry.doc(), "options": rows,
                               "budgets": budgets}, indent=2, default=str))
        return
    click.echo(f"{entry.kind} {entry.name}  ({entry.origin()})")
    click.echo(f"  {entry.summary}")
    if paper_mode:
        click.echo(f"  paper mode: {obj.paper_mode} (what --mode auto runs; --mode pool/init overrides)")
    click.echo("")
    for line in entry.doc().splitlines():
        click.echo(f"  {line}")
    click.echo("\noptions:")
    if not rows:
        click.echo("  (none)")
    for r in rows:
        click.echo(f"  {r['name']:<16} {r['type']:<14} default={r['default']!r}  {r['help']}")
    for bname, overrides in budgets.items():
        own = "" if bname not in BUDGET_BASE else f" ({BUDGET_BASE[bname]}'s, then its own)"
        click.echo(f"\nbudget '{bname}' overrides{own}: {json.dumps(overrides)}")


@click.command("plugins")
@click.option("--all", "show_all", is_flag=True, help="include the built-in plugins.")
@click.option("--hook", default=None, help="only plugins implementing this hook.")
@click.option("--requirements", is_flag=True, help="print name==version lines.")
def plugins_cmd(show_all, hook, requirements):
    """List loaded plugin packages as JSON (and any that failed to load)."""
    from pd_plugins.plugins import get_host

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


COMMANDS = (list_cmd, show_cmd, plugins_cmd)
