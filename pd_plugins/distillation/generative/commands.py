"""`pd-run prior train`: fit a small built-in prior for glad (decoder) or ld3m (ldm) offline."""
from __future__ import annotations

import json

import click

from pd_plugins.paths import PathParam


@click.group("prior")
def prior():
    """Generative priors for glad/ld3m."""


@prior.command("train")
@click.option("--kind", type=click.Choice(["decoder", "ldm"]), required=True, help="decoder (glad) or ldm (ld3m).")
@click.option("--dataset", default="digits", show_default=True, help="dataset name (pd-run list datasets).")
@click.option("--data-root", default=None, help="dataset file/folder where the dataset needs one.")
@click.option("--out", required=True, type=PathParam("output_dir", "prior directory"), help="directory to write the prior to.")
@click.option("--epochs", type=int, default=None, help="decoder epochs, or the ldm UNet epochs (default: 60 / 60).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def train(kind, dataset, data_root, out, epochs, seed, device):
    """Fit a prior on the dataset's train split and save it to OUT."""
    from pathlib import Path

    from pd_plugins.pipeline.context import RunContext
    from pd_plugins.plugins import registries
    from pd_plugins.pipeline.runner import resolve_device

    splits = registries()["dataset"].load(dataset)(data_root)
    ctx = RunContext(seed=seed, device=resolve_device(device), stage=f"prior-{kind}")
    if kind == "decoder":
        from pd_plugins.distillation.generative.decoder import train_decoder

        info = train_decoder(splits.train, ctx, Path(out), **({"epochs": epochs} if epochs else {}))
    else:
        from pd_plugins.distillation.generative.ldm_train import train_ldm

        info = train_ldm(splits.train, ctx, Path(out), **({"unet_epochs": epochs} if epochs else {}))
    click.echo(json.dumps({"out": str(out), "dataset": dataset, **info}))
