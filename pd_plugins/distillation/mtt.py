"""``mtt``: Matching Training Trajectories (Cazenavette et al., CVPR 2022).

Expert trajectories (see :mod:`pd_plugins.distillation.experts`) are trained on ``data`` -- the pruned set
in ``pool`` mode, the full set in ``init`` mode -- and cached. Every iteration picks the next
expert (a seeded shuffle per pass over the experts), a start epoch s ~ U{0..max_start_epoch-1},
and unrolls ``syn_steps`` functional SGD steps of a student from theta_s on mini-batches of
the synthetic set (independent DSA, learned lr eta; full graph, or TESLA's two-pass
constant-memory gradient with ``memory=constant``). The loss
||theta_N - theta_{s+M}||^2 / ||theta_s - theta_{s+M}||^2 updates the images (SGD, momentum
0.5) and eta (SGD lr_lr, momentum 0.5); evaluation trains with eta (``DistillResult.lr``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Optional

import torch

from pd_plugins.training import accel
from pd_plugins.errors import OptionsError
from pd_plugins.training.evaluate import soft_cross_entropy
from pd_plugins.distillation.experts import ExpertRecipe, ensure_experts, expert_context, load_trajectory
from pd_plugins.distillation.objectives import Objective, distill_pixels
from pd_plugins.options import as_dict, option
from pd_plugins.strategies import Distiller


def fit_expert_batch(recipe: ExpertRecipe, pool_size: int, syn_steps: int, expert_epochs: int) -> ExpertRecipe:
    """``recipe`` with its batch capped at ``pool_size * expert_epochs // syn_steps`` (at least 1).

    MTT's learned lr makes ``syn_steps`` student steps cover the expert's ``expert_epochs``-epoch
    segment. On MTT's data that segment is hundreds of SGD steps (CIFAR-10, batch 256: 196 a
    epoch); on a small pool (a 10 % window of a small set) batch 256 is one step an epoch, the
    segment is shorter than the student's unroll and the learned lr collapses to a fraction of
    ``lr_teacher``. The cap keeps at least ``syn_steps`` expert steps in every matched segment.
    """
    cap = max(1, pool_size * expert_epochs // syn_steps)
    return replace(recipe, batch=cap) if recipe.batch > cap else recipe


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """Each row of ``v`` (N, K) moved to the nearest point (Euclidean) of the probability simplex.

    Sort-based projection (Duchi et al., ICML 2008): subtract the one threshold that leaves the
    positive part summing to 1, clip the rest to 0.
    """
    u = v.sort(dim=1, descending=True).values
    excess = u.cumsum(1) - 1.0
    k = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    support = ((u - excess / k) > 0).sum(1, keepdim=True)  # the condition holds on a prefix of u
    threshold = excess.gather(1, support - 1) / support.to(v.dtype)
    return (v - threshold).clamp(min=0.0)


class TrajectoryObjective(Objective):
    """MTT's normalised parameter-matching loss with a learned student lr (and optional soft labels)."""

    def __init__(self, *, recipe: ExpertRecipe, experts: int = 100, syn_steps: int = 20, expert_epochs: int = 3,
                 max_start_epoch: int = 25, batch_syn: int = 0, lr_teacher: float = 0.01, lr_lr: float = 1e-5,
                 augment: bool = True, soft_labels: bool = False, lr_labels: float = 2.0, memory: str = "unrolled",
                 zca=None, fit_batch: bool = True, expert_seed: Optional[int] = None):
        if memory not in ("unrolled", "constant"):
            raise OptionsError(f"unknown MTT memory mode {memory!r}; use unrolled or constant")
        if max_start_epoch - 1 + expert_epochs > recipe.epochs:  # the latest target epoch a segment can reach
            raise OptionsError(f"max_start_epoch - 1 + expert_epochs ({max_start_epoch} - 1 + {expert_epochs}) "
                               f"exceeds the {recipe.epochs} expert training epochs")
        self.recipe, self.n_experts, self.syn_steps = recipe, experts, syn_steps
        self.expert_epochs, self.max_start_epoch, self.batch_syn = expert_epochs, max_start_epoch, batch_syn
        self.lr_teacher, self.lr_lr, self.augment = lr_teacher, lr_lr, augment
        self.soft_labels, self.lr_labels = soft_labels, lr_labels
        self.memory, self.fit_batch = memory, fit_batch
        self.expert_seed = expert_seed  # None: the run's seed
        self.zca = zca  # the transform ``data`` was whitened with (expert cache identity)
        self._cache: dict[int, torch.Tensor] = {}
        self.trained_experts = 0

    def setup(self, data, ipc, labels, ctx):
        if self.fit_batch:
            self.recipe = fit_expert_batch(self.recipe, len(data), self.syn_steps, self.expert_epochs)
        self.directory, self.trained_experts = ensure_experts(data, expert_context(ctx, self.expert_seed),
                                                              self.recipe, self.n_experts, self.zca)
        self.setup_student(data, labels, ctx)

    def setup_student(self, data, labels, ctx):
        """Student, augmentation, learned lr and targets (everything of setup but the experts)."""
        self.ctx, self.data = ctx, data
        device = ctx.device
        with ctx.fork_rng("mtt-student"):
            self.student = ctx.make_model(data.channels, data.num_classes, data.im_size)
        self.student.train()
        self.names = [n for n, _ in self.student.named_parameters()]
        self.shapes = [p.shape for _, p in self.student.named_parameters()]
        self.aug = ctx.make_augmenter(data) if self.augment else None
        self.syn_lr = torch.tensor(float(self.lr_teacher), device=device, requires_grad=True)
        onehot = torch.nn.functional.one_hot(labels, data.num_classes).float().to(device)
        self.targets = onehot.requires_grad_(True) if self.soft_labels else labels.to(device)

    def setup_standin(self, data, labels, ctx):
        """:meth:`setup` without experts, for timing probes (``pd-run plan``): a random walk of the real
        trajectory's length from the student's initial parameters stands in for every expert."""
        from pd_plugins.distillation.experts import flat_params

        if self.fit_batch:
            self.recipe = fit_expert_batch(self.recipe, len(data), self.syn_steps, self.expert_epochs)
        self.directory, self.trained_experts = None, 0
        self.setup_student(data, labels, ctx)
        theta = flat_params(self.student)
        walk = 0.01 * torch.randn(self.recipe.epochs + 1, theta.numel(), generator=torch.Generator().manual_seed(0))
        standin = theta + walk.cumsum(0)
        self._cache = {i: standin for i in range(self.n_experts)}

    def describe(self):
        return {"experts_dir": str(self.directory), "experts_trained": self.trained_experts,
                "expert_batch": self.recipe.batch}

    def extra_parameters(self):
        """The learned lr, and the soft labels when learned. Soft labels go back onto the probability
        simplex after each update (a declared projection, no rendering needed): the soft cross-entropy
        is bounded below only for non-negative targets, and an evaluator training on a target with
        negative entries drives those logits to minus infinity."""
        groups = [{"params": [self.syn_lr], "lr": self.lr_lr, "momentum": 0.5}]
        if self.soft_labels:
            groups.append({"params": [self.targets], "lr": self.lr_labels, "momentum": 0.5,
                           "projection": project_to_simplex})
        return groups

    def trajectory(self, i: int) -> torch.Tensor:
        if i not in self._cache:
            if len(self._cache) >= 8:
                self._cache.pop(next(iter(self._cache)))
            self._cache[i] = load_trajectory(self.directory, i)
        return self._cache[i]

    def expert_for(self, it: int) -> int:
        """Expert of iteration ``it``: a fresh seeded shuffle for every pass over the experts."""
        n = self.n_experts
        perm = torch.randperm(n, generator=self.ctx.generator("mtt-order", it // n))
        return int(perm[it % n])

    def unflatten(self, theta: torch.Tensor) -> dict:
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            k = shape.numel()
            out[name] = theta[start:start + k].view(shape)
            start += k
        return out

    def _plan(self, images, g) -> list[tuple[torch.Tensor, object]]:
        """Per student step: the mini-batch indices and the augmentation draw (sampled once, replayable)."""
        n = images.shape[0]
        bs = self.batch_syn if self.batch_syn > 0 else n
        chunks: list[torch.Tensor] = []
        plan = []
        for _ in range(self.syn_steps):
            if not chunks:
                chunks = list(torch.randperm(n, generator=g).to(images.device, non_blocking=True).split(bs))
            idx = chunks.pop(0)
            params = self.aug.sample(int(idx.shape[0]), g) if self.aug is not None else None
            plan.append((idx, params))
        return plan

    def _step_ce(self, images, theta, idx, params, compile: bool = False):
        x = images[idx]
        if params is not None:
            x = self.aug.apply(x, params)
        with self.ctx.autocast():
            logits = accel.functional_forward(self.student, self.unflatten(theta), x, compile=compile)
        return soft_cross_entropy(logits.float(), self.targets[idx])

    def loss(self, images, it, step):
        g = self.ctx.generator("mtt-iter", it)
        expert = self.expert_for(it)
        traj = self.trajectory(expert)
        s = int(torch.randint(0, self.max_start_epoch, (1,), generator=g))
        start = traj[s].to(images.device, non_blocking=True)  # host trajectories: no wait for the device
        target = traj[s + self.expert_epochs].to(images.device, non_blocking=True)
        plan = self._plan(images, g)
        if self.memory == "constant":
            return self._constant_loss(images, plan, start, target), {"start_epoch": s, "expert": expert}
        theta = start.clone().requires_grad_(True)
        for idx, params in plan:
            ce = self._step_ce(images, theta, idx, params)
            grad = torch.autograd.grad(ce, theta, create_graph=True)[0]
            theta = theta - self.syn_lr * grad
        loss = ((theta - target) ** 2).sum() / ((start - target) ** 2).sum()
        return loss, {"start_epoch": s, "expert": expert}

    def _constant_loss(self, images, plan, start, target):
        """TESLA's constant-memory gradient, returned as a surrogate whose value is the loss.

        Pass 1 unrolls with detached theta_i and accumulates G = sum g_i, so theta_N = theta_0 - eta G
        and L = ||theta_N - theta*||^2 / ||theta_0 - theta*||^2 are closed-form in eta and G. Pass 2
        replays every step (same indices and augmentation draw), recomputes g_i with a graph to the
        images and backpropagates only its first-order term <g_i(x), -eta dL/dtheta_N>; the terms
        through theta_i's dependence on earlier steps are dropped, so the gradient equals the unrolled
        one only for syn_steps = 1. Memory holds one step's graph whatever syn_steps is.
        """
        eta = self.syn_lr.detach()
        compile = bool(self.ctx.compile)
        theta = start.clone()
        G = torch.zeros_like(start)
        for idx, params in plan:  # pass 1: no graph to the images
            th = theta.requires_grad_(True)
            ce = self._step_ce(images.detach(), th, idx, params, compile=compile)
            gi = torch.autograd.grad(ce, th)[0]
            G += gi
            theta = (th - eta * gi).detach()
        denom = ((start - target) ** 2).sum()
        residual = theta - target  # theta_N - theta*
        value = (residual ** 2).sum() / denom
        dtheta = 2.0 * residual / denom  # dL/dtheta_N
        d_eta = -(dtheta * G).sum()  # dL/deta from L(eta) = ||theta_0 - eta G - theta*||^2 / denom
        v = -eta * dtheta
        leaves = [images] + ([self.targets] if self.soft_labels else [])
        grads = [torch.zeros_like(t) for t in leaves]
        theta = start.clone()
        for idx, params in plan:  # pass 2: first-order term of each step, graph freed per step
            th = theta.requires_grad_(True)
            ce = self._step_ce(images, th, idx, params)
            gi = torch.autograd.grad(ce, th, create_graph=True)[0]
            for acc, gr in zip(grads, torch.autograd.grad((gi * v).sum(), leaves, allow_unused=True)):
                if gr is not None:
                    acc += gr
            theta = (th - eta * gi.detach()).detach()
        surrogate = value.detach() + (self.syn_lr - eta) * d_eta
        for leaf, gr in zip(leaves, grads):
            surrogate = surrogate + (leaf * gr).sum() - (leaf * gr).sum().detach()
        return surrogate

    def learned_lr(self):
        return float(self.syn_lr.detach())

    def learned_labels(self):
        return self.targets.detach().cpu().clone() if self.soft_labels else None

    def state(self):
        st = {"syn_lr": self.syn_lr.detach().cpu().clone()}
        if self.soft_labels:
            st["targets"] = self.targets.detach().cpu().clone()
        return st

    def load_state(self, state):
        with torch.no_grad():
            if "syn_lr" in state:
                self.syn_lr.copy_(state["syn_lr"].to(self.syn_lr.device))
            if self.soft_labels and "targets" in state:
                self.targets.copy_(state["targets"].to(self.targets.device))


class MTT(Distiller):
    """Matching Training Trajectories with a learned synthetic learning rate."""

    name = "mtt"
    recommended_keep = 0.6  # Moser et al.: MTT peaks with 60-80% easy samples kept
    # the unroll holds syn_steps graphs of batch_syn images (memory=constant holds one); experts train at expert_batch
    memory_options = ("batch_syn", "syn_steps", "expert_batch")

    @classmethod
    def uses_real_init(cls, options) -> bool:
        return options.init == "real"

    @dataclass(frozen=True)
    class Options:
        iterations: int = option(5000, "distillation iterations (MTT: 5000)")
        syn_steps: int = option(20, "student steps on the synthetic set per iteration (N)")
        expert_epochs: int = option(3, "expert epochs the student must match (M)")
        max_start_epoch: int = option(25, "start epochs are drawn from 0..max_start_epoch-1 (T+)")
        batch_syn: int = option(0, "synthetic mini-batch per student step (0: the whole set)")
        lr_img: float = option(1000.0, "SGD learning rate of the synthetic images")
        momentum: float = option(0.5, "SGD momentum of the synthetic images")
        lr_lr: float = option(1e-5, "SGD learning rate of the learned student lr")
        lr_teacher: float = option(0.01, "expert SGD lr and the initial learned student lr")
        experts: int = option(100, "number of expert trajectories (trained and cached when missing)")
        expert_seed: int = option(-1, "seed the experts are trained with (-1: the run's seed); a fixed value shares "
                                      "one expert buffer across distillation seeds, as MTT trains its buffer once")
        train_epochs: int = option(50, "epochs each expert is trained (>= max_start_epoch - 1 + "
                                  "expert_epochs, the latest target epoch)")
        expert_batch: int = option(256, "expert training batch size")
        fit_expert_batch: bool = option(True, "cap expert_batch at pool_size * expert_epochs // syn_steps, so that a "
                                              "matched expert segment holds at least syn_steps SGD steps on a small "
                                              "pool (no effect on MTT's datasets); the batch used is recorded")
        augment: bool = option(True, "independent DSA in student steps and expert training")
        init: Literal["real", "noise"] = option("real", "initial images: real samples of the pruned pool, or noise")
        soft_labels: bool = option(False, "learn soft labels, initialised from one-hot and kept on the probability "
                                          "simplex after each update (pd_plugins extension)")
        lr_labels: float = option(2.0, "SGD learning rate of the soft labels (momentum 0.5)")
        zca: bool = option(False, "ZCA whitening (kornia, eps 0.1) fitted on the pool at [0, 1] scale, instead of "
                                  "mean/std: real images, experts, synthetic set and evaluation live in ZCA space")
        memory: Literal["unrolled", "constant"] = option(
            "unrolled", "unrolled: backprop through the full unroll (exact); constant: TESLA's two-pass gradient, "
            "memory independent of syn_steps, drops the cross-step second-order terms (equal to unrolled only "
            "at syn_steps=1)")
        runtime_prune: float = option(0.0, "runtime pruning is not implemented for MTT expert training; must be 0")
        log_every: int = option(10, "log the loss every N iterations")

        def validate(self):
            for name in ("iterations", "syn_steps", "expert_epochs", "max_start_epoch", "experts", "train_epochs",
                         "expert_batch"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be >= 1")
            if self.max_start_epoch - 1 + self.expert_epochs > self.train_epochs:
                raise ValueError("train_epochs must be >= max_start_epoch - 1 + expert_epochs (the latest target "
                                 "epoch: start epochs run 0..max_start_epoch-1)")
            if self.lr_teacher <= 0:
                raise ValueError("lr_teacher must be > 0")
            if self.expert_seed < -1:
                raise ValueError("expert_seed must be >= 0, or -1 for the run's seed")

    budgets = {"quick": {"iterations": 100, "syn_steps": 10, "expert_epochs": 2, "max_start_epoch": 4,
                         "train_epochs": 6, "experts": 4, "lr_img": 10.0, "lr_lr": 1e-6},
               # tuned for accuracy per CPU-minute (issue 17; MTT's ipc-1 settings: start epochs 0-1,
               # 2 expert epochs, lr_lr 1e-7): MNIST/CIFAR-10 subsets at ipc 1, about 3-4 min a run on 2 cores
               "cpu": {"iterations": 500, "syn_steps": 20, "max_start_epoch": 2, "train_epochs": 4, "experts": 8,
                       "lr_img": 100.0, "lr_lr": 1e-7}}

    def recipe(self, pool_size: Optional[int] = None) -> ExpertRecipe:
        """The expert recipe; with ``pool_size``, the batch it trains with on a pool of that size."""
        o = self.options
        recipe = ExpertRecipe(epochs=o.train_epochs, lr=o.lr_teacher, batch=o.expert_batch, augment=o.augment)
        if pool_size is not None and o.fit_expert_batch:
            recipe = fit_expert_batch(recipe, pool_size, o.syn_steps, o.expert_epochs)
        return recipe

    def objective(self, zca=None) -> TrajectoryObjective:
        o = self.options
        if o.zca and zca is None:
            raise OptionsError("mtt zca=true: only the mtt distiller itself whitens its data (MTT.fit_zca); "
                               "a generative distiller's renders are not in ZCA space")
        if o.runtime_prune > 0:
            raise OptionsError("mtt runtime_prune: runtime pruning during expert training is not implemented; "
                               "prune the pool with --pruner instead")
        return TrajectoryObjective(recipe=self.recipe(), experts=o.experts, syn_steps=o.syn_steps,
                                   expert_epochs=o.expert_epochs, max_start_epoch=o.max_start_epoch,
                                   batch_syn=o.batch_syn, lr_teacher=o.lr_teacher, lr_lr=o.lr_lr,
                                   augment=o.augment, soft_labels=o.soft_labels, lr_labels=o.lr_labels,
                                   memory=o.memory, zca=zca, fit_batch=o.fit_expert_batch,
                                   expert_seed=None if o.expert_seed < 0 else o.expert_seed)

    def fit_zca(self, data):
        """The ZCA transform fitted on ``data`` (the pool) when ``zca`` is on, else None."""
        from pd_plugins.data.zca import ZCA

        return ZCA.fit(data) if self.options.zca else None

    def experts(self, data, ctx):
        """Train (or reuse) this configuration's expert trajectories on ``data`` (whitened when ``zca``)."""
        zca = self.fit_zca(data)
        seed = None if self.options.expert_seed < 0 else self.options.expert_seed
        return ensure_experts(zca.apply(data) if zca else data, expert_context(ctx, seed), self.recipe(len(data)),
                              self.options.experts, zca)

    def cost(self, data, ipc, ctx, init_pool=None):
        """Experts: SGD on the pool at the expert batch, ``experts x train_epochs`` epochs. Distillation: the
        student's second-order graph of ``batch_syn`` images, ``syn_steps`` of them held unrolled (one with
        ``memory=constant``, whose first pass holds a first-order graph), the synthetic images with their
        gradient and momentum, and up to 8 expert trajectories in memory."""
        import math

        from pd_plugins.planning.costs import NetworkPass, StageCost, parameter_bytes, synthetic_state
        from pd_plugins.planning.probes import ObjectiveProbe, training_step
        from pd_plugins.training.evaluate import train_network

        o = self.options
        recipe = self.recipe(len(data))
        shape = (data.channels, *data.im_size)

        def build():
            return ctx.make_model(data.channels, data.num_classes, data.im_size)

        student, aug = build(), ctx.make_augmenter(data) if o.augment else None
        trajectory = (recipe.epochs + 1) * parameter_bytes(student)
        whitened = {"ZCA-whitened pool (float32)": len(data) * math.prod(shape) * 4} if o.zca else {}
        epochs = o.experts * recipe.epochs
        experts = StageCost(
            "experts", passes=[NetworkPass(student, shape, min(recipe.batch, len(data)), augmenter=aug,
                                           role="student")],
            resident={"expert parameters and gradients": 2 * parameter_bytes(student), **whitened},
            units=[training_step(f"expert SGD step (batch {recipe.batch})", build, data, ctx, batch=recipe.batch,
                                 count=epochs * math.ceil(len(data) / recipe.batch), lr=recipe.lr,
                                 augment=recipe.augment, train_network=train_network)],
            stored={"expert trajectories": o.experts * trajectory}, lower=("-D expert_batch",),
            note=f"{o.experts} experts x {recipe.epochs} epochs, none cached yet")
        n_syn = data.num_classes * ipc
        batch = min(o.batch_syn or n_syn, n_syn)
        unrolled = o.memory == "unrolled"
        passes = [NetworkPass(student, shape, batch, order=2, held=o.syn_steps if unrolled else 1, input_grad=True,
                              augmenter=aug, role="student")]
        if not unrolled:  # pass 1: a first-order step at a time, all freed before pass 2 reuses the memory
            passes.append(NetworkPass(student, shape, batch, order=1, held=0, augmenter=aug, role="student"))
        labels = {"soft labels, gradient, momentum": 3 * n_syn * data.num_classes * 4} if o.soft_labels else {}

        fitted = {}

        def make():
            fitted["zca"] = self.fit_zca(data)
            return self.objective(fitted["zca"])

        def setup(objective, hard_labels):
            zca = fitted["zca"]
            objective.setup_standin(zca.apply(data) if zca is not None else data, hard_labels, ctx)

        probe = ObjectiveProbe(make, data, ipc, ctx, lr_img=o.lr_img, momentum=o.momentum, setup=setup)
        distill = StageCost(
            "distill", passes=passes,
            resident={**synthetic_state(data, ipc),
                      f"expert trajectories in memory ({min(8, o.experts)})": min(8, o.experts) * trajectory,
                      **labels, **whitened},
            units=[probe.unit(f"iteration ({o.syn_steps} {o.memory} steps of batch {batch})", o.iterations)],
            lower=(("-D batch_syn", "-D syn_steps", "-D memory=constant") if unrolled else ("-D batch_syn",))
            + ("--ipc",))
        return [experts, distill]

    def distill(self, data, ipc, ctx, init_pool=None):
        o = self.options
        init_pool = init_pool if init_pool is not None else data
        zca = self.fit_zca(data)
        if zca is not None:  # everything the loop touches lives in ZCA space from here on
            same = init_pool is data
            data = zca.apply(data)
            init_pool = data if same else zca.apply(init_pool)
        objective = self.objective(zca)
        result = distill_pixels(objective, data, init_pool, ipc, ctx,
                                name=self.name, iterations=o.iterations, lr_img=o.lr_img, momentum=o.momentum,
                                init=o.init, log_every=o.log_every, options=as_dict(o))
        if zca is not None:
            result.zca = zca.state()
            result.meta["zca"] = {"eps": zca.eps, "fitted_on": zca.fitted_on, "space": "synthetic images are ZCA-whitened"}
        return result
