"""glad/ld3m: objective options reach the objective (issue 15 item 1), LD3M with outside
priors and weights=auto (item 6). Tiny sizes, CPU, seconds."""
from __future__ import annotations

import json

import pytest
import torch

from pd_plugins.errors import DataError, OptionsError
from pd_plugins.pipeline.context import RunContext
from tests.generative_fixtures import tiny_data, tiny_ldm


def distiller(name):
    from pd_plugins.plugins import registries

    return registries()["distiller"].load(name)


class SpyAugmenter:
    """Wraps the run's augmenter and counts every call that augments a batch."""

    def __init__(self, inner, calls):
        self.inner, self.calls = inner, calls

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name in ("pair", "apply", "__call__"):
            def counted(*a, **kw):
                self.calls.append(name)
                return attr(*a, **kw)
            return counted
        return attr

    def __call__(self, *a, **kw):
        self.calls.append("__call__")
        return self.inner(*a, **kw)


def spied_ctx(tmp_path, calls, **kw) -> RunContext:
    ctx = RunContext(seed=0, augmentation="dsa", cache_dir=tmp_path / "cache", **kw)
    make = ctx.make_augmenter
    ctx.make_augmenter = lambda data, *a, **k: SpyAugmenter(make(data, *a, **k), calls)
    return ctx


# -- objective options (item 1) --------------------------------------------------------------
@pytest.mark.parametrize("method", ["glad", "ld3m"])
def test_dc_objective_gets_dsa_and_one_one_loops(method):
    cls = distiller(method)
    opts = cls.resolve_options({"objective": "dc"})
    objective = cls(opts).objective()
    assert objective.augment is True and (objective.outer_opt, objective.inner_opt) == (1, 1)
    assert opts.objective_options["augment"] is True  # recorded in the resolved config
    # the user's objective options win, and reach the objective through DC's own parser
    opts = cls.resolve_options({"objective": "dc", "objective_options.runtime_prune": "0.25",
                                "objective_options.augment": "false"})
    objective = cls(opts).objective()
    assert objective.runtime_prune == 0.25 and objective.augment is False


@pytest.mark.parametrize("method,published", [
    ("glad", {"syn_steps": 20, "expert_epochs": 3, "max_start_epoch": 5, "train_epochs": 15}),
    ("ld3m", {"syn_steps": 10, "expert_epochs": 2, "max_start_epoch": 2, "train_epochs": 15}),
])
def test_mtt_objective_takes_the_methods_published_settings(method, published):
    cls = distiller(method)
    opts = cls.resolve_options({"objective": "mtt"})
    got = opts.objective_options
    assert {k: got[k] for k in published} == published
    assert (got["lr_lr"], got["memory"], got["augment"]) == (1e-6, "constant", True)
    assert got["max_start_epoch"] != distiller("mtt").Options().max_start_epoch  # not MTT's own default
    objective = cls(opts).objective()
    assert (objective.max_start_epoch, objective.lr_lr, objective.augment) == (published["max_start_epoch"], 1e-6, True)
    # budget < user: the quick budget's experts, then the user's lr_lr over both
    quick = cls.resolve_options({"objective": "mtt", "objective_options": '{"lr_lr": 1e-4}'}, "quick")
    assert quick.objective_options["experts"] == cls.objective_budgets["quick"]["mtt"]["experts"]
    assert quick.objective_options["lr_lr"] == 1e-4


@pytest.mark.parametrize("values,match", [
    ({"objective": "dc", "objective_options.outer_loops": "1"}, "unknown option 'outer_loops'"),
    ({"objective": "mtt", "objective_options": {"lr_img": 10}}, "image optimiser"),
    ({"objective": "dm", "batch_real": 4}, "objective_options.batch_real"),
    ({"objective": "dc", "objective_options.outer_loop": "0"}, "outer_loop and inner_loop"),
    ({"objective": "mtt", "objective_options.zca": "true"}, "zca"),
    ({"objective_options": "[1, 2]"}, "mapping"),
])
def test_bad_objective_options_are_one_line_errors(values, match):
    with pytest.raises(OptionsError, match=match) as exc:
        distiller("glad").resolve_options(values)
    assert "\n" not in str(exc.value)


def test_unknown_objective_option_on_the_command_line(tmp_path):
    from click.testing import CliRunner

    from pd_plugins.cli import cli

    res = CliRunner().invoke(cli, ["--distiller", "glad", "-D", "objective=dc", "-D", "objective_options.foo=1",
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code != 0 and "unknown option 'foo'" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "r").exists()


@pytest.mark.parametrize("method", ["glad", "ld3m"])
def test_recommended_keep_follows_the_objective(method):
    from pd_plugins.config import RunConfig
    from pd_plugins.pipeline.runner import Run

    cls = distiller(method)
    want = {"dc": 0.6, "mtt": 0.6, "dm": 0.2}
    for objective, keep in want.items():
        assert cls.recommended_keep_for(cls.resolve_options({"objective": objective})) == keep
        cfg = RunConfig(pruner="loss-easy", distiller=method, distiller_options={"objective": objective})
        assert Run(cfg).resolved["keep"] == keep


def test_dc_objective_with_dsa_through_a_generator(tmp_path):
    calls: list = []
    data, ctx = tiny_data(), spied_ctx(tmp_path, calls)
    cls = distiller("glad")
    opts = cls.resolve_options({"objective": "dc", "objective_options": {"batch_real": 4}, "iterations": 2,
                                "sg_batch": 3})
    glad = cls(opts)
    from pd_plugins.distillation.generative.base import make_generator

    start = make_generator("decoder", glad.generator_values(), data, ctx).init_latents(data, 2, ctx)
    res = glad.distill(data, 2, ctx)
    assert calls.count("pair") == 2 * data.num_classes  # one siamese DSA draw per class and matching step
    assert not torch.allclose(res.latents["f"], start["f"])  # gradients reached the latents
    assert res.options["objective_options"]["augment"] is True


def test_mtt_objective_with_dsa_through_a_generator(tmp_path):
    calls: list = []
    data, ctx = tiny_data(), spied_ctx(tmp_path, calls)
    cls = distiller("glad")
    small = {"experts": 1, "train_epochs": 2, "syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 1,
             "expert_batch": 6}
    opts = cls.resolve_options({"objective": "mtt", "objective_options": small, "iterations": 2, "sg_batch": 3})
    glad = cls(opts)
    from pd_plugins.distillation.generative.base import make_generator

    start = make_generator("decoder", glad.generator_values(), data, ctx).init_latents(data, 1, ctx)
    glad.distill(data, 1, ctx)  # trains (and caches) the expert, augmenting its training batches too
    calls.clear()
    res = glad.distill(data, 1, ctx)  # experts from the cache: every augmentation now is a student step's
    assert calls.count("apply") >= opts.iterations * small["syn_steps"]
    assert not torch.allclose(res.latents["f"], start["f"])
    assert res.lr is not None and res.lr != 0.01  # the learned lr moved under GLaD's lr_lr
    # the objective's setup record (its expert batch and cache) reaches the latent result's meta
    assert 1 <= res.meta["expert_batch"] <= small["expert_batch"] and res.meta["experts_trained"] == 0


@pytest.mark.parametrize("soft_labels", [False, True])
def test_mtt_objective_renders_each_image_update_once(tmp_path, monkeypatch, soft_labels):
    """Issue 28: an image update decodes the synthetic set twice (the render the loss sees and the
    re-render with grad); MTT's soft-label projection runs in the optimiser and renders nothing."""
    import math

    from pd_plugins.distillation.generative import base

    decoded: list[int] = []
    make = base.make_generator

    def counting_generator(*a, **kw):
        gen = make(*a, **kw)
        decode = gen.decode

        def counted(latents, labels, aux):
            decoded.append(int(labels.shape[0]))
            return decode(latents, labels, aux)

        gen.decode = counted
        return gen

    monkeypatch.setattr(base, "make_generator", counting_generator)
    data, ctx = tiny_data(), RunContext(seed=0, augmentation="dsa", cache_dir=tmp_path / "cache")
    cls = distiller("glad")
    small = {"experts": 1, "train_epochs": 2, "syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 1,
             "expert_batch": 6, "soft_labels": soft_labels}
    ipc, sg_batch, iterations = 2, 4, 3
    opts = cls.resolve_options({"objective": "mtt", "objective_options": small, "iterations": iterations,
                                "sg_batch": sg_batch})
    glad = cls(opts)
    res = glad.distill(data, ipc, ctx)
    n = data.num_classes * ipc
    chunks = math.ceil(n / sg_batch)  # 6 images in chunks of 4 and 2
    updates = iterations * glad.objective().steps_per_iteration()
    assert len(decoded) == updates * 2 * chunks + chunks  # two passes an update, and the final render
    assert sum(decoded) == (updates * 2 + 1) * n
    if soft_labels:  # the projection still ran after every update
        assert not torch.equal(res.labels, torch.eye(data.num_classes).repeat_interleave(ipc, 0))
        assert res.labels.min() >= 0 and torch.allclose(res.labels.sum(1), torch.ones(n), atol=1e-5)
    else:
        assert res.labels.dtype == torch.long


def test_decoder_prior_geometry_is_checked_before_the_run(tmp_path):
    from pd_plugins.distillation.generative.decoder import train_decoder

    train_decoder(tiny_data(hw=12), RunContext(seed=0), tmp_path / "p", epochs=1, z_dim=8, width=16)
    cls = distiller("glad")
    glad = cls(cls.resolve_options({"weights": str(tmp_path / "p")}))
    glad.check_data(tiny_data(hw=12))
    with pytest.raises(DataError, match="trained for"):
        glad.check_data(tiny_data(hw=8))


# -- mapping options --------------------------------------------------------------------------
def test_mapping_options_from_dotted_keys_and_json():
    from dataclasses import dataclass

    from pd_plugins.options import coerce, option

    @dataclass(frozen=True)
    class O:
        extra: dict = option({}, "a mapping")
        n: int = option(1)

    assert coerce(O, {"extra": '{"a": 1}', "extra.b": "x", "n": "2"}) == O(extra={"a": 1, "b": "x"}, n=2)
    assert coerce(O, {"extra": {"a": 1}}).extra == {"a": 1}
    assert coerce(O, {"extra": "a=1,b=x", "extra.c": "2"}).extra == {"a": "1", "b": "x", "c": "2"}
    with pytest.raises(OptionsError, match="unknown option 'n.x'"):
        coerce(O, {"n.x": 1})
    with pytest.raises(OptionsError, match="bad value"):
        coerce(O, {"extra": "{not json"})


# -- outside priors and weights=auto (item 6) ----------------------------------------------------
diffusers = pytest.importorskip("diffusers")


def big_table_ldm(tmp_path, rows: int, c=1, latent=2, unet_in=None, prior_json=None):
    """A tiny diffusers prior with ``rows`` class-table rows (no prior.json unless given)."""
    path = tiny_ldm(tmp_path, k=rows - 1, c=c)
    if unet_in is not None:
        cfg = json.loads((path / "unet" / "config.json").read_text())
        cfg["in_channels"] = unet_in
        (path / "unet" / "config.json").write_text(json.dumps(cfg))
    if prior_json is not None:
        (path / "prior.json").write_text(json.dumps(prior_json))
    return path


def test_class_ids_map_a_larger_class_table(tmp_path):
    from pd_plugins.distillation.generative.base import make_generator

    path = big_table_ldm(tmp_path, rows=8)  # 7 classes + null, the dataset has 3
    data, ctx = tiny_data(), RunContext(seed=0)
    with pytest.raises(DataError, match="give class_ids") as exc:
        make_generator("ldm", {"weights": str(path), "steps": 2}, data, ctx)
    assert "\n" not in str(exc.value)
    gen = make_generator("ldm", {"weights": str(path), "steps": 2, "class_ids": "6,2,0"}, data, ctx)
    cond = gen.init_latents(data, 1, ctx)["cond"]
    torch.testing.assert_close(cond, gen.table[[6, 2, 0]])
    assert gen.null == 7
    for ids, match in (("1,2", "2 ids, the dataset 3 classes"), ("1,2,7", r"out of range.*null class"),
                       ("1,1,2", "distinct"), ("1,2,-1", "must be >= 0")):
        with pytest.raises((DataError, OptionsError), match=match):
            make_generator("ldm", {"weights": str(path), "steps": 2, "class_ids": ids}, data, ctx)


def test_geometry_of_a_prior_without_prior_json_is_checked_before_the_run(tmp_path):
    cls = distiller("ld3m")
    rgb = tiny_data(c=3)
    path = big_table_ldm(tmp_path / "a", rows=4)  # 1-channel autoencoder, 3 classes + null
    assert not (path / "prior.json").exists()
    ld3m = cls(cls.resolve_options({"weights": str(path)}))
    ld3m.check_data(tiny_data())  # fits
    with pytest.raises(DataError, match="takes 1-channel images, the dataset has 3"):
        ld3m.check_data(rgb)
    with pytest.raises(DataError, match="give class_ids"):
        ld3m.check_data(tiny_data(k=2))  # 4 rows for 2 classes: which rows?
    bad = big_table_ldm(tmp_path / "b", rows=4, unet_in=5)
    with pytest.raises(DataError, match="unet takes 5 latent channels, the autoencoder makes 2"):
        cls(cls.resolve_options({"weights": str(bad)})).check_data(tiny_data())
    trained = big_table_ldm(tmp_path / "c", rows=4, prior_json={"pd_prior": "ldm", "format": 1, "config": {
        "channels": 1, "im_size": [12, 12], "num_classes": 3}})
    with pytest.raises(DataError, match="trained for"):
        cls(cls.resolve_options({"weights": str(trained)})).check_data(tiny_data())


def test_weights_auto_trains_once_then_reuses_the_cache(tmp_path, monkeypatch, capsys):
    from pd_plugins.distillation.generative import ldm_train

    trained = []
    real_train = ldm_train.train_ldm

    def counting(*a, **kw):
        trained.append(kw)
        return real_train(*a, **kw)

    monkeypatch.setattr(ldm_train, "train_ldm", counting)
    cls = distiller("ld3m")
    assert cls.Options().weights == "auto"
    opts = cls.resolve_options({"prior_ae_epochs": 1, "prior_unet_epochs": 1, "prior_width": 8, "steps": 2,
                                "iterations": 1, "objective_options.batch_real": 4, "sg_batch": 3})
    ld3m = cls(opts)
    ld3m.check_inputs()  # nothing to check on disk yet
    data = tiny_data()
    ld3m.check_data(data)
    first = ld3m.distill(data, 1, RunContext(seed=0, augmentation="none", cache_dir=tmp_path / "cache"))
    assert "training the small ldm prior" in capsys.readouterr().err
    second = ld3m.distill(data, 1, RunContext(seed=0, augmentation="none", cache_dir=tmp_path / "cache"))
    assert "reusing the ldm prior" in capsys.readouterr().err
    assert len(trained) == 1 and trained[0] == {"ae_epochs": 1, "unet_epochs": 1, "width": 8}
    assert first.meta["prior"]["trained_now"] and not second.meta["prior"]["trained_now"]
    assert first.meta["prior"]["path"] == second.meta["prior"]["path"] == second.generator["options"]["weights"]
    torch.testing.assert_close(first.images, second.images)
    assert first.options["weights"] == "auto"
    # another seed or another pool is another prior
    ld3m.distill(data, 1, RunContext(seed=1, augmentation="none", cache_dir=tmp_path / "cache"))
    ld3m.distill(tiny_data(n_per=5), 1, RunContext(seed=0, augmentation="none", cache_dir=tmp_path / "cache"))
    assert len(trained) == 3
    with pytest.raises(DataError, match="square images"):
        ld3m.check_data(tiny_data(hw=7))
    with pytest.raises(OptionsError, match="prior_unet_epochs: only weights=auto trains a prior"):
        cls.resolve_options({"weights": str(tmp_path), "prior_unet_epochs": 3})


def test_outside_prior_without_class_ids_stops_before_the_run_directory(tmp_path):
    from click.testing import CliRunner

    from pd_plugins.cli import cli

    path = big_table_ldm(tmp_path, rows=21)  # 20 classes + null; digits has 10
    res = CliRunner().invoke(cli, ["--distiller", "ld3m", "-D", f"weights={path}", "--pruner", "none",
                                   "--evaluator", "none", "--out", str(tmp_path / "r")])
    assert res.exit_code != 0 and "give class_ids" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()
