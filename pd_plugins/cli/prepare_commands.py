"""``pd-run prepare``: build, once and from local files only, the datasets the papers report.

``prepare subset`` writes an ImageNet subset of MTT/GLaD as one tensor file that the datasets
``imagenette``, ``imagewoof``, ... read; ``prepare tiny-imagenet`` re-lays Tiny ImageNet's validation
folder by class for the ``imagefolder`` dataset. Nothing is downloaded; torch is imported in the
command bodies only."""
from __future__ import annotations

import sys

import click

from pd_plugins.cli.flags import print_summary, show_traceback
from pd_plugins.paths import PathParam

SUBSET_NAMES = ("imagenette", "imagewoof", "imagefruit", "imagemeow", "imagesquawk", "imageyellow")


@click.group("prepare")
def prepare_cmd():
    """Prepare ImageNet subsets and Tiny ImageNet from local copies (nothing is downloaded)."""


@prepare_cmd.command("subset")
@click.argument("name", metavar="NAME", type=click.Choice(SUBSET_NAMES, case_sensitive=False))
@click.option("--imagenet-root", required=True, type=PathParam("dir", "ImageNet root"),
              help="ImageNet ImageFolder: the folder holding train/<wnid>/ and val/<wnid>/.")
@click.option("--resolution", type=click.Choice(["32", "64", "128"]), default="128", show_default=True,
              help="image side in pixels.")
@click.option("--resize", type=click.Choice(["squash", "center-crop"]), default="squash", show_default=True,
              help="squash: both sides to the resolution, as MTT/GLaD do; center-crop: shorter side, then "
                   "the centre (aspect ratio kept).")
@click.option("--out", default=".", show_default=True, type=PathParam("output_dir", "output folder"),
              help="folder for <name>-<resolution>.pt.")
@click.option("--overwrite", is_flag=True, help="rebuild the file even when a complete one exists.")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON.")
@click.option("--no-progress", is_flag=True, help="no progress bar.")
@click.option("--traceback", is_flag=True, help="show the full traceback on errors.")
@click.pass_context
def subset_cmd(ctx, name, imagenet_root, resolution, resize, out, overwrite, as_json, no_progress, traceback):
    """Write the ImageNet subset NAME (MTT/GLaD class lists) as one tensor file, reused on a second run.

    NAME: imagenette, imagewoof, imagefruit, imagemeow, imagesquawk or imageyellow.

    \b
    Then train on it with, e.g.:
        pd-run run --dataset imagenette --data-root imagenette-128.pt
    """
    from pd_plugins.data.imagenet_subsets import prepare_subset

    show_traceback(ctx, traceback)
    info = prepare_subset(name, imagenet_root, out, resolution=int(resolution), resize=resize, overwrite=overwrite,
                          progress=not no_progress and sys.stderr.isatty())
    if not as_json:
        click.echo(f"{'reusing' if info['reused'] else 'wrote'} {info['file']}", err=True)
    print_summary({"file": info["file"], "reused": info["reused"], "subset": info["subset"],
                   "resolution": info["resolution"], "resize": info["resize"], "train": info["counts"]["train"],
                   "test": info["counts"]["test"], "source_root": info["source_root"]}, as_json)


@prepare_cmd.command("tiny-imagenet")
@click.argument("root", metavar="ROOT", type=PathParam("dir", "Tiny ImageNet root"))
@click.option("--expect-classes", type=click.IntRange(min=2), default=200, show_default=True,
              help="class count checked in train/ and the annotations (200 for Tiny ImageNet).")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON.")
@click.option("--traceback", is_flag=True, help="show the full traceback on errors.")
@click.pass_context
def tiny_imagenet_cmd(ctx, root, expect_classes, as_json, traceback):
    """Re-lay ROOT/val/images/ into ROOT/val/<wnid>/ by val_annotations.txt (a laid-out val/ is reused).

    \b
    Then train on it with, e.g.:
        pd-run run --dataset imagefolder --data-root ROOT --dataset-option im_size=64
    """
    from pd_plugins.data.tiny_imagenet import relayout_val

    show_traceback(ctx, traceback)
    info = relayout_val(root, expect_classes=expect_classes)
    if not as_json:
        click.echo(f"{'already laid out by class' if info['reused'] else 're-laid by class'}: {info['val']}",
                   err=True)
    print_summary(info, as_json)


COMMANDS = (prepare_cmd,)
