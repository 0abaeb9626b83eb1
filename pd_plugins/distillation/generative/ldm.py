"""``ldm``: a class-conditional latent diffusion prior with LD3M's modified DDIM sampler.

Built on diffusers (optional extra ``diffusion``, imported lazily): a ``UNet2DModel`` with
class embeddings (or a ``UNet2DConditionModel`` with a ``class_embedder.pt`` cross-attention
context table), an ``AutoencoderKL`` or ``VQModel`` first stage and a ``DDIMScheduler``
schedule, all loaded with ``from_pretrained(local_dir, local_files_only=True)``.

Prior directory layout (written by ``pd-run prior train --kind ldm``, or any diffusers
pipeline folder with these sub-folders): ``unet/``, ``vae/``, optional ``scheduler/`` and
``class_embedder.pt``, optional ``prior.json``.

The learnables per image are the initial latent ``x_T`` and the conditioning vector ``cond``.
Rendering forward-noises x_T to the first DDIM timestep with noise drawn once per iteration
and image, runs a guided DDIM sampler whose pred_x0 at reverse step index i (T = steps-1 -> 0)
is mixed as (1 - i/T)·pred_x0 + (i/T)·x_T, and decodes with the autoencoder. Every UNet call
is gradient-checkpointed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from pd_plugins.errors import DataError, PdPluginsError
from pd_plugins.options import option
from pd_plugins.distillation.generative.base import Generator, class_real_images, freeze

EXTRA_HINT = "pip install 'pd-plugins[diffusion]'"

#: LD3M/CompVis schedule: 1000 steps, linear in sqrt(beta) from 0.0015 to 0.0195
LDM_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.0015, "beta_end": 0.0195, "beta_schedule": "scaled_linear",
                "clip_sample": False, "set_alpha_to_one": True}


class MissingExtraError(PdPluginsError):
    """An optional dependency (extra) is not installed."""


def require_diffusers():
    """The ``diffusers`` module, or a one-line error naming the extra to install."""
    try:
        import diffusers
    except ImportError as exc:
        raise MissingExtraError(f"the latent diffusion prior needs diffusers, which is not installed: {EXTRA_HINT}") from exc
    return diffusers


def mix_weight(i: int, T: int) -> float:
    """Weight of x_T in pred_x0 at reverse step index ``i`` of ``T`` (1 at i = T, 0 at i = 0)."""
    return i / T if T > 0 else 0.0


def ddim_sample(eps_fn, x_T: torch.Tensor, alphas: torch.Tensor, timesteps: list[int], final_alpha: float,
                eta: float, noise_start: torch.Tensor, noise_steps: torch.Tensor | None, trace=None) -> torch.Tensor:
    """LD3M's DDIM sampler: returns the final latent.

    ``alphas`` are the cumulative alphas, ``timesteps`` descending; ``eps_fn(x, t)`` is the
    (guided) noise prediction; ``noise_start`` forward-noises x_T to ``timesteps[0]``;
    ``noise_steps[:, k]`` is step k's stochastic noise (only used when ``eta > 0``).
    ``trace(k, weight)`` is called with each step's mixing weight (tests).
    """
    T = len(timesteps) - 1
    a0 = alphas[timesteps[0]]
    x = a0.sqrt() * x_T + (1 - a0).sqrt() * noise_start
    for k, t in enumerate(timesteps):
        i = T - k
        a_t = alphas[t]
        a_prev = alphas[timesteps[k + 1]] if k + 1 < len(timesteps) else torch.tensor(final_alpha, dtype=a_t.dtype)
        eps = eps_fn(x, t)
        pred_x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        w = mix_weight(i, T)
        if trace is not None:
            trace(k, w)
        pred_x0 = (1 - w) * pred_x0 + w * x_T
        sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
        x = a_prev.sqrt() * pred_x0 + (1 - a_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        if eta > 0:
            x = x + sigma * noise_steps[:, k]
    return x


def _load_part(diffusers, folder: Path, allowed: tuple[str, ...], what: str, config_name: str = "config.json"):
    cfg_path = folder / config_name
    if not cfg_path.is_file():
        raise DataError(f"{what} {folder} has no {config_name} (expected a diffusers save_pretrained folder)")
    try:
        cls_name = json.loads(cfg_path.read_text()).get("_class_name", "")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise DataError(f"{what} {cfg_path} is not valid JSON: {exc}") from None
    if cls_name not in allowed:
        raise DataError(f"{what} {folder} holds a {cls_name or 'unknown'!r} model; expected one of {', '.join(allowed)}")
    try:
        return getattr(diffusers, cls_name).from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # diffusers raises many types for a bad folder
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{what} {folder} is not a valid {cls_name} checkpoint: {first[:200]}") from None


UNETS = ("UNet2DModel", "UNet2DConditionModel")
AUTOENCODERS = ("AutoencoderKL", "VQModel")


def _config(folder: Path, what: str, config_name: str = "config.json") -> dict:
    path = folder / config_name
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{what} {folder} has no {config_name} (expected a diffusers save_pretrained folder)") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} {path} is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise DataError(f"{what} {path} is not a JSON object")
    return cfg


def prior_geometry(root: Path) -> dict:
    """What an ldm prior folder fits, read from its configs without loading the networks:
    autoencoder input channels, latent channels, UNet input channels, class-table rows, and
    ``prior.json``'s dataset config when the folder has one."""
    unet, vae = _config(root / "unet", "ldm unet"), _config(root / "vae", "ldm autoencoder")
    for cfg, part, allowed, what in ((unet, "unet", UNETS, "ldm unet"), (vae, "vae", AUTOENCODERS, "ldm autoencoder")):
        name = cfg.get("_class_name", "")
        if name not in allowed:
            raise DataError(f"{what} {root / part} holds a {name or 'unknown'!r} model; "
                            f"expected one of {', '.join(allowed)}")
    embedder = root / "class_embedder.pt"
    if embedder.exists():
        from pd_plugins.io import safe_torch_load

        state = safe_torch_load(embedder, what="ldm class embedder")
        table = state.get("weight") if isinstance(state, dict) else None
        if not isinstance(table, torch.Tensor) or table.dim() != 2:
            raise DataError(f"ldm class embedder {embedder} has no 2-d 'weight' table")
        rows = int(state["weight"].shape[0])
    elif isinstance(unet.get("num_class_embeds"), int):
        rows = unet["num_class_embeds"]
    else:
        raise DataError(f"ldm prior {root}: the unet has no class embedding table and there is no class_embedder.pt")
    out = {"vae_channels": vae.get("in_channels"), "latent_channels": vae.get("latent_channels"),
           "unet_channels": unet.get("in_channels"), "class_rows": rows}
    if (root / "prior.json").exists():
        from pd_plugins.distillation.generative.store import read_prior_meta

        out["trained_for"] = read_prior_meta(root, "ldm").get("config", {})
    return out


def check_prior_geometry(root: Path, geometry: dict, channels: int, im_size: tuple) -> None:
    """Refuse a prior whose autoencoder, UNet or recorded dataset does not fit the images."""
    from pd_plugins.distillation.generative.base import check_trained_for

    vae_c, lat_c, unet_c = geometry["vae_channels"], geometry["latent_channels"], geometry["unet_channels"]
    if vae_c is not None and vae_c != channels and not (vae_c == 3 and channels == 1):
        raise DataError(f"ldm prior {root}: the autoencoder takes {vae_c}-channel images, the dataset has {channels}")
    if lat_c is not None and unet_c is not None and lat_c != unet_c:
        raise DataError(f"ldm prior {root}: the unet takes {unet_c} latent channels, the autoencoder makes {lat_c}")
    if "trained_for" in geometry:
        check_trained_for(geometry["trained_for"], {"channels": channels, "im_size": list(im_size)}, str(root))


def class_rows(rows: int, num_classes: int, class_ids, guidance: float, root) -> tuple[list[int], "int | None"]:
    """(prior row of each dataset class, null row or None) for a class table of ``rows`` rows.

    Without ``class_ids`` the table must hold exactly the dataset's classes, plus an optional
    last null row; with them, one id per class below the null row (the last one) when guided.
    """
    class_ids = list(class_ids or [])
    if class_ids:
        if len(class_ids) != num_classes:
            raise DataError(f"class_ids has {len(class_ids)} ids, the dataset {num_classes} classes "
                            "(one prior row each)")
        usable = rows - 1 if guidance != 1.0 else rows
        bad = [c for c in class_ids if not 0 <= c < usable]
        if bad:
            raise DataError(f"class_ids {bad} out of range: ldm prior {root} has class rows 0..{usable - 1}"
                            + (f" (row {rows - 1} is the null class of guidance)" if guidance != 1.0 else ""))
        if len(set(class_ids)) != len(class_ids):
            raise DataError(f"class_ids must be distinct, got {class_ids}")
        return class_ids, (rows - 1 if guidance != 1.0 else None)
    if rows < num_classes:
        raise DataError(f"ldm prior {root} has {rows} class embeddings, the dataset {num_classes} classes")
    if rows > num_classes + 1:
        raise DataError(f"ldm prior {root} has {rows} class rows, the dataset {num_classes} classes: give "
                        f"class_ids=ROW,ROW,... (the prior row of each dataset class, {num_classes} ids)")
    null = rows - 1 if rows == num_classes + 1 else None
    if guidance != 1.0 and null is None:
        raise DataError(f"ldm prior {root} has no null-class embedding, so guidance must be 1.0 (got {guidance})")
    return list(range(num_classes)), null


class LatentDiffusionGenerator(Generator):
    """Frozen class-conditional LDM rendered by LD3M's modified DDIM sampler."""

    name = "ldm"
    latent_roles = {"x_T": "img", "cond": "w"}

    @dataclass(frozen=True)
    class Options:
        weights: str = option("", "prior directory (unet/, vae/, optional scheduler/ and class_embedder.pt); required")
        steps: int = option(10, "DDIM steps (LD3M: 10)")
        guidance: float = option(3.0, "classifier-free guidance scale (LD3M: 3.0; 1 = no guidance)")
        eta: float = option(0.0, "DDIM eta (LD3M: 0)")
        grad_checkpoint: bool = option(True, "gradient-checkpoint every UNet call (LD3M)")
        class_ids: list[int] = option([], "prior class row of each dataset class, e.g. the ImageNet ids of a subset; "
                                          "needed when the prior has more classes than the dataset (last row: null)")

        def validate(self):
            if self.steps < 1:
                raise ValueError("steps must be >= 1")
            if any(c < 0 for c in self.class_ids):
                raise ValueError(f"class_ids must be >= 0, got {list(self.class_ids)}")
            if self.eta < 0:
                raise ValueError("eta must be >= 0")

    @classmethod
    def check_weights(cls, options) -> Path:
        """The prior folder ``weights`` names; its prior.json (when present) must be an ldm one."""
        from pd_plugins.paths import expect_dir

        if not options.weights:
            raise DataError("generator 'ldm' needs weights=DIR: train one with `pd-run prior train --kind ldm --out DIR`")
        if options.weights == "auto":
            raise DataError("weights=auto is resolved by the ld3m distiller; generator 'ldm' itself needs weights=DIR")
        root = expect_dir(options.weights, "ldm prior")
        if (root / "prior.json").exists():
            from pd_plugins.distillation.generative.store import read_prior_meta

            read_prior_meta(root, "ldm")
        for part in ("unet", "vae"):
            if not (root / part / "config.json").is_file():
                raise DataError(f"ldm prior {root} has no {part}/config.json "
                                "(expected diffusers save_pretrained folders unet/ and vae/)")
        return root

    @classmethod
    def check_geometry(cls, options, data) -> None:
        """The prior's channels, latent shapes and class table against ``data``, from its configs."""
        root = cls.check_weights(options)
        geometry = prior_geometry(root)
        check_prior_geometry(root, geometry, data.channels, tuple(data.im_size))
        class_rows(geometry["class_rows"], data.num_classes, options.class_ids, options.guidance, root)

    def __init__(self, options, data, ctx):
        super().__init__(options, data, ctx)
        diffusers = require_diffusers()
        o = self.options
        root = self.check_weights(o)
        self.check_geometry(o, data)
        self.unet = freeze(_load_part(diffusers, root / "unet", UNETS, "ldm unet").to(ctx.device))
        self.vae = freeze(_load_part(diffusers, root / "vae", AUTOENCODERS, "ldm autoencoder").to(ctx.device))
        sched_dir = root / "scheduler"
        if sched_dir.is_dir():
            sched = _load_part(diffusers, sched_dir, ("DDIMScheduler", "DDPMScheduler"), "ldm scheduler",
                               "scheduler_config.json")
            ddim = diffusers.DDIMScheduler.from_config(sched.config)
        else:  # a bare unet/vae folder: LD3M's documented schedule
            ddim = diffusers.DDIMScheduler(**LDM_SCHEDULE)
        if ddim.config.prediction_type != "epsilon":
            raise DataError(f"ldm prior {root}: only epsilon-prediction schedulers are supported, not {ddim.config.prediction_type!r}")
        ddim.set_timesteps(o.steps)
        self.timesteps = [int(t) for t in ddim.timesteps]
        self.alphas = ddim.alphas_cumprod.to(ctx.device, torch.float32)
        self.final_alpha = float(ddim.final_alpha_cumprod)
        self.table = self._class_table(root).to(ctx.device)
        rows, self.null = class_rows(self.table.shape[0], self.num_classes, o.class_ids, o.guidance, root)
        self.rows = torch.tensor(rows, dtype=torch.long, device=ctx.device)  # prior row of each dataset class
        vcfg = self.vae.config
        self.vae_channels = int(vcfg.in_channels)
        if self.vae_channels != self.channels and not (self.vae_channels == 3 and self.channels == 1):
            raise DataError(f"ldm autoencoder takes {self.vae_channels}-channel images, the dataset has {self.channels}")
        self.scale = float(getattr(vcfg, "scaling_factor", 1.0) or 1.0)
        self.vae_size = int(vcfg.sample_size) if isinstance(vcfg.sample_size, int) else int(vcfg.sample_size[0])

    def _class_table(self, root: Path) -> torch.Tensor:
        """The conditioning vectors, one per class (+ a last null row for guidance)."""
        path = root / "class_embedder.pt"
        if path.exists():
            from pd_plugins.io import safe_torch_load

            state = safe_torch_load(path, what="ldm class embedder")
            if not isinstance(state, dict) or "weight" not in state:
                raise DataError(f"ldm class embedder {path} has no 'weight' table")
            self.cond_mode = "context" if type(self.unet).__name__ == "UNet2DConditionModel" else "class"
            if self.cond_mode == "class":
                self.unet.class_embedding = nn.Identity()
            return state["weight"].float()
        emb = getattr(self.unet, "class_embedding", None)
        if not isinstance(emb, nn.Embedding):
            raise DataError(f"ldm prior {root}: the unet has no class embedding table and there is no class_embedder.pt")
        table = emb.weight.detach().clone()
        self.unet.class_embedding = nn.Identity()  # the conditioning vector itself is fed (and learned)
        self.cond_mode = "class"
        return table

    def modules(self):
        return [self.unet, self.vae]

    def latent_shapes(self):
        f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        s = self.vae_size // f
        return {"x_T": (int(self.unet.config.in_channels), s, s), "cond": (int(self.table.shape[1]),)}

    # -- pixels <-> autoencoder ------------------------------------------------------
    def _to_vae(self, unit: torch.Tensor) -> torch.Tensor:
        if self.vae_channels == 3 and self.channels == 1:
            unit = unit.repeat(1, 3, 1, 1)
        if tuple(unit.shape[-2:]) != (self.vae_size, self.vae_size):
            unit = torch.nn.functional.interpolate(unit, size=(self.vae_size, self.vae_size), mode="bilinear", align_corners=False)
        return unit * 2 - 1

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised dataset images -> diffusion latents (scaled)."""
        x = self._to_vae(self.unit_pixels(images))
        out = self.vae.encode(x)
        lat = out.latent_dist.mean if hasattr(out, "latent_dist") else out.latents
        return lat * self.scale

    def init_latents(self, init_pool, ipc, ctx):
        from pd_plugins.distillation.synthetic import class_major_labels

        real = class_real_images(init_pool, ipc, ctx.generator("ldm", "init")).to(self.device)
        labels = class_major_labels(self.num_classes, ipc, self.device)
        with torch.no_grad():
            x_T = torch.cat([self.encode(real[i:i + 10]) for i in range(0, len(real), 10)])
        return {"x_T": x_T.detach().clone(), "cond": self.table[self.rows[labels]].detach().clone()}

    def aux(self, key, n, ctx):
        g = ctx.generator("ldm-noise", *key)
        shape = self.latent_shapes()["x_T"]
        out = {"noise_start": torch.randn(n, *shape, generator=g).to(self.device, non_blocking=True)}
        if self.options.eta > 0:
            out["noise_steps"] = torch.randn(n, len(self.timesteps), *shape, generator=g).to(self.device,
                                                                                                non_blocking=True)
        return out

    # -- sampling ---------------------------------------------------------------------
    def _unet(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.cond_mode == "context":
            return self.unet(x, t, encoder_hidden_states=cond[:, None, :]).sample
        return self.unet(x, t, class_labels=cond).sample

    def eps(self, x: torch.Tensor, t: int, cond: torch.Tensor) -> torch.Tensor:
        """Guided noise prediction (one batched UNet call for conditional and null)."""
        g = self.options.guidance
        if g != 1.0:
            null = self.table[self.null].expand_as(cond)
            xx, cc = torch.cat([x, x]), torch.cat([cond, null])
        else:
            xx, cc = x, cond
        tt = torch.full((xx.shape[0],), t, device=x.device, dtype=torch.long)
        if self.options.grad_checkpoint and torch.is_grad_enabled():
            out = checkpoint(self._unet, xx, tt, cc, use_reentrant=False)
        else:
            out = self._unet(xx, tt, cc)
        if g == 1.0:
            return out
        e_c, e_u = out.chunk(2)
        return e_u + g * (e_c - e_u)

    def sample_latents(self, latents, aux, trace=None) -> torch.Tensor:
        cond = latents["cond"]
        return ddim_sample(lambda x, t: self.eps(x, t, cond), latents["x_T"], self.alphas, self.timesteps,
                           self.final_alpha, self.options.eta, aux["noise_start"], aux.get("noise_steps"), trace)

    def decode(self, latents, labels, aux):
        x0 = self.sample_latents(latents, aux)
        img = self.vae.decode(x0 / self.scale).sample
        unit = ((img + 1) / 2).clamp(0, 1)
        if self.vae_channels == 3 and self.channels == 1:
            unit = unit.mean(1, keepdim=True)
        return self.normalise_unit(unit)
