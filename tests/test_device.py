"""Device policy (docs/gpu.md) without a GPU: device names and their one-line errors, out-of-memory
handling, peak-memory records, artifacts that cross devices, device-typed cache keys, pool placement,
and a device-marked end-to-end run (``pytest -m device --device cuda`` runs it on a GPU)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pd_plugins.cli import cli
from pd_plugins.errors import DeviceError
from pd_plugins.training import device as dev

ROOT = Path(__file__).resolve().parents[1]
TINY_DM = ["--pruner", "none", "--distiller", "dm", "--ipc", "1", "-D", "iterations=4", "-D", "batch_real=4",
           "-D", "log_every=1", "--model-option", "width=8", "--evaluator", "none", "--no-progress"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PD_CACHE_DIR", str(tmp_path / "cache"))


def _gpus(monkeypatch, count: int):
    """Pretend this machine has ``count`` CUDA devices (0: no CUDA)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def _invoke(args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
    return res, errors


# -- device names ---------------------------------------------------------------------------------

def test_device_names_this_machine_lacks_are_one_line_exit_2(monkeypatch):
    _gpus(monkeypatch, 1)
    assert dev.check_device("cpu") == "cpu" and dev.check_device("cuda") == "cuda"
    assert dev.check_device("cuda:0") == "cuda:0"
    with pytest.raises(DeviceError, match=r"'cuda:7' requested but this machine has 1 CUDA device\(s\) \(cuda:0\)"):
        dev.check_device("cuda:7")
    for bad in ("tpu", "cuda:x", "cuda:-1", "gpu"):
        with pytest.raises(DeviceError, match="unknown device"):
            dev.check_device(bad)
    _gpus(monkeypatch, 0)
    with pytest.raises(DeviceError, match="CUDA is not available on this machine"):
        dev.check_device("cuda")
    assert DeviceError("x").exit_code == 2


@pytest.mark.parametrize("gpus,device,expect", [
    (1, "cuda:7", "this machine has 1 CUDA device(s)"),
    (0, "cuda", "CUDA is not available"),
    (0, "cuda:0", "CUDA is not available"),
])
def test_cli_bad_device_is_one_line_exit_2(monkeypatch, host, tmp_path, gpus, device, expect):
    _gpus(monkeypatch, gpus)
    out = tmp_path / "run"
    res, errors = _invoke(["run", *TINY_DM, "--device", device, "--out", out])
    assert res.exit_code == 2, res.stderr
    assert res.stderr.strip().splitlines() == errors and len(errors) == 1, res.stderr
    assert expect in errors[0] and "Traceback" not in res.stderr + res.output
    assert not out.exists()


# -- out of memory ----------------------------------------------------------------------------------

def _oom_at(monkeypatch, iteration: int):
    """DM's loss raises torch's out-of-memory error at ``iteration`` (what a GPU raises)."""
    from pd_plugins.distillation import dm

    real = dm.DMObjective.loss

    def loss(self, images, it, step):
        if it == iteration:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total "
                                         "capacity of 79.10 GiB of which 1.20 GiB is free.")
        return real(self, images, it, step)

    monkeypatch.setattr(dm.DMObjective, "loss", loss)


def test_out_of_memory_names_the_knobs_keeps_the_checkpoint_and_the_same_command_resumes(monkeypatch, host, tmp_path):
    from pd_plugins.types import DistillResult

    args = ["run", *TINY_DM, "--checkpoint-every", "2", "--device", "cpu"]
    _oom_at(monkeypatch, 3)
    out = tmp_path / "run"
    res, errors = _invoke([*args, "--out", out])
    assert res.exit_code == 1 and len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    line = errors[0]
    assert "distiller 'dm' ran out of device memory (tried to allocate 2.50 GiB)" in line
    assert "lower -D batch_real or --ipc" in line
    checkpoint = out / "checkpoints" / "distill.pt"
    assert f"last checkpoint (iteration 2) is kept in {checkpoint}" in line and checkpoint.exists()
    monkeypatch.undo()
    monkeypatch.setenv("PD_CACHE_DIR", str(tmp_path / "cache"))
    resumed, errors = _invoke([*args, "--out", out])  # the same command, memory freed
    assert resumed.exit_code == 0 and not errors, resumed.stderr
    assert not checkpoint.exists()
    straight, _ = _invoke([*args, "--out", tmp_path / "straight"])
    assert straight.exit_code == 0
    a, b = DistillResult.load(out / "distill.pt"), DistillResult.load(tmp_path / "straight" / "distill.pt")
    assert torch.equal(a.images, b.images)  # resumed from iteration 2 exactly as if never interrupted


def test_out_of_memory_without_checkpoints_says_so(monkeypatch, host, tmp_path):
    _oom_at(monkeypatch, 1)
    res, errors = _invoke(["run", *TINY_DM, "--checkpoint-every", "0", "--device", "cpu", "--out", tmp_path / "r"])
    assert res.exit_code == 1 and len(errors) == 1
    assert errors[0].endswith("no checkpoint was written (--checkpoint-every 0)")


def test_each_strategy_declares_its_memory_knobs(host):
    regs = host.registries()

    def flags(kind, name, **options):
        cls = regs[kind].load(name)
        return cls(cls.resolve_options(options)).memory_flags()

    assert flags("distiller", "dm") == ["-D batch_real", "--ipc"]
    assert flags("distiller", "dc") == flags("distiller", "dsa") == ["-D batch_real", "-D batch_train", "--ipc"]
    assert flags("distiller", "mtt") == ["-D batch_syn", "-D syn_steps", "-D expert_batch", "--ipc"]
    assert flags("distiller", "glad", objective="mtt") == [
        "-D sg_batch", "-D objective_options.batch_syn", "-D objective_options.syn_steps",
        "-D objective_options.expert_batch", "--ipc"]
    assert flags("distiller", "herding") == ["-D batch", "--ipc"]
    assert flags("pruner", "el2n-window") == ["-P batch", "-P score_batch"]
    assert flags("evaluator", "dsa-step") == ["-E batch"]
    for name in regs["distiller"].names():  # every built-in distiller names something to lower
        assert regs["distiller"].load(name).memory_options or name in ("random", "ld3m", "glad"), name


def test_allocation_failure_is_short():
    exc = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity ...")
    assert dev.is_out_of_memory(exc) and not dev.is_out_of_memory(RuntimeError("CUDA out of memory"))
    assert dev.allocation_failure(exc) == "tried to allocate 20.00 MiB"
    assert dev.allocation_failure(torch.OutOfMemoryError("out of memory")) == "out of memory"


# -- peak memory and the manifest -------------------------------------------------------------------

def test_peak_memory_reads_cuda_and_records_nothing_on_a_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: calls.append(("sync", d)))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: calls.append(("reset", d)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 3 * 2 ** 30 + 2 ** 19)
    with dev.PeakMemory("cuda:0") as peak:
        pass
    assert calls == [("sync", "cuda:0"), ("reset", "cuda:0")]
    assert peak.record() == {"cuda_max_memory_allocated_mib": 3072.5}
    with dev.PeakMemory("cpu") as cpu_peak:
        pass
    assert cpu_peak.mib is None and cpu_peak.record() == {} and len(calls) == 2


def test_manifest_records_the_device_and_each_stages_peak(monkeypatch, host, tmp_path):
    class FakeGPU(dev.PeakMemory):  # the CUDA reading, on this CPU
        def __exit__(self, *exc):
            self.mib = 42.0

    monkeypatch.setattr(dev, "PeakMemory", FakeGPU)
    out = tmp_path / "run"
    res, _ = _invoke(["run", *TINY_DM, "--device", "cpu", "--out", out])
    assert res.exit_code == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device"] == {"type": "cpu", "threads": torch.get_num_threads()}
    assert {s: e["cuda_max_memory_allocated_mib"] for s, e in manifest["stages"].items()} == {
        "prune": 42.0, "distill": 42.0}


def test_configure_sets_deterministic_cuda_kernels_and_leaves_a_cpu_alone(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen = {}
    monkeypatch.setattr(torch, "use_deterministic_algorithms",
                        lambda on, warn_only=False: seen.update(on=on, warn=warn_only))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    assert dev.configure("cpu") == {} and seen == {}
    record = dev.configure("cuda")
    assert record["deterministic"] and not record["cudnn_benchmark"] and seen == {"on": True, "warn": True}
    assert torch.backends.cudnn.deterministic and record["cublas_workspace"] == dev.CUBLAS_WORKSPACE
    fast = dev.configure("cuda:0", cudnn_benchmark=True)
    assert fast["cudnn_benchmark"] and torch.backends.cudnn.benchmark and seen == {"on": False, "warn": True}


# -- artifacts cross devices ------------------------------------------------------------------------

@pytest.fixture
def written_on_gpu(monkeypatch):
    """While active, torch.save tags every storage as living on cuda:0, as a GPU run's files are."""
    import torch.serialization as ser

    monkeypatch.setattr(ser, "location_tag", lambda storage: "cuda:0")
    yield
    monkeypatch.undo()


def test_artifacts_written_on_a_gpu_load_on_a_cpu(written_on_gpu, tmp_path, digits_splits):
    from pd_plugins.distillation.experts import expert_path, load_trajectory
    from pd_plugins.io import atomic_torch_save, safe_torch_load
    from pd_plugins.pipeline.context import RunContext
    from pd_plugins.pruning.score_cache import ScoreCache
    from pd_plugins.types import DistillResult, PruneResult

    ctx = RunContext(device="cpu", work_dir=tmp_path / "run", stage="distill")
    DistillResult(images=torch.randn(10, 1, 8, 8), labels=torch.arange(10), ipc=1, distiller="dm", options={},
                  lr=None, history=[], source="s").save(tmp_path / "distill.pt", fingerprint="f")
    PruneResult(keep=torch.arange(5), scores=torch.rand(20), pruner="x").save(tmp_path / "prune.pt", fingerprint="f")
    opt = torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=0.1, momentum=0.5)
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()  # a momentum buffer: optimiser state is saved as it lives on the device
    ctx.save_checkpoint({"iteration": 2, "state": {"opt": opt.state_dict()}})
    atomic_torch_save({"trajectory": torch.randn(3, 7)}, expert_path(tmp_path / "experts", 0))
    cache = ScoreCache(tmp_path / "cache")
    cache.save("k", torch.rand(20), {"x": 1})

    with pytest.raises(RuntimeError, match="CUDA"):  # the tag took: a plain load would need a GPU
        torch.load(tmp_path / "distill.pt", weights_only=True)
    loaded = [DistillResult.load(tmp_path / "distill.pt").images, PruneResult.load(tmp_path / "prune.pt").scores,
              ctx.load_checkpoint()["state"]["opt"]["state"][0]["momentum_buffer"],
              load_trajectory(tmp_path / "experts", 0), cache.load("k", 20),
              safe_torch_load(tmp_path / "prune.pt")["keep"]]
    assert all(t.device.type == "cpu" for t in loaded)


def test_checkpoints_written_on_a_cpu_load_into_device_tensors(tmp_path):
    """Resume copies a host checkpoint into the device's tensors (``meta`` stands in for a GPU here)."""
    from pd_plugins.distillation.objectives import Objective, SyntheticOptimiser

    cpu = torch.randn(4, 3, requires_grad=True)
    saved = SyntheticOptimiser(Objective(), {"images": cpu}, [{"params": [cpu], "lr": 0.1}], 0.5).state()
    on_device = torch.empty(4, 3, device="meta", requires_grad=True)
    target = SyntheticOptimiser(Objective(), {"images": on_device}, [{"params": [on_device], "lr": 0.1}], 0.5)
    target.load_state(saved)
    assert target.tensors["images"].device.type == "meta" and target.tensors["images"].shape == (4, 3)


def test_every_torch_load_names_a_map_location_and_weights_only():
    """A file loads wherever it was written: every torch.load says where its tensors go and loads weights only."""
    loads, offenders = 0, []
    for folder in ("pd_plugins", "benchmarks", "baselines", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                    loads += 1
                    kw = {k.arg: k.value for k in node.keywords}
                    weights_only = kw.get("weights_only")
                    if "map_location" not in kw or not (isinstance(weights_only, ast.Constant) and weights_only.value):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert loads >= 1 and not offenders, offenders


def test_generators_are_built_on_the_host():
    """Generators live on the host (RunContext.generator's CPU default; nowhere else names a device): a
    seed draws the same numbers on every device."""
    sites = []
    for path in sorted((ROOT / "pd_plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Generator" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                sites.append((str(path.relative_to(ROOT)), [k.arg for k in node.keywords]))
    assert ("pd_plugins/pipeline/context.py", ["device"]) in sites  # RunContext.generator: CPU unless asked
    on_a_device = [p for p, keywords in sites if "device" in keywords and p != "pd_plugins/pipeline/context.py"]
    assert not on_a_device, on_a_device


# -- caches name the device type --------------------------------------------------------------------

def test_expert_and_prior_keys_name_the_device_type(tmp_path, digits_splits):
    from pd_plugins.distillation.experts import ExpertRecipe, expert_dir, expert_key
    from pd_plugins.distillation.generative.auto_prior import prior_key
    from pd_plugins.pipeline.context import RunContext

    data = digits_splits.train
    cpu = RunContext(device="cpu", cache_dir=tmp_path)
    gpu0, gpu1 = (RunContext(device=d, cache_dir=tmp_path) for d in ("cuda:0", "cuda:1"))
    recipe = ExpertRecipe(epochs=2)
    assert "device" not in expert_key(data, cpu, recipe)  # CPU caches filled before keep their folders
    assert expert_key(data, gpu0, recipe)["device"] == "cuda"
    assert expert_dir(data, cpu, recipe) != expert_dir(data, gpu0, recipe) == expert_dir(data, gpu1, recipe)
    assert prior_key(data, gpu0, {})["device"] == "cuda" and "device" not in prior_key(data, cpu, {})
    assert dev.device_key("cuda:3") == {"device": "cuda"} and dev.device_key("cpu") == {}


# -- the pool's pixels ------------------------------------------------------------------------------

def test_pool_pixels_resident_or_gathered_through_the_host(monkeypatch, digits_splits):
    pixels = digits_splits.train.pixels
    positions = torch.tensor([5, 0, 17, 5])
    resident = dev.DevicePixels(pixels, "cpu")
    assert resident.resident and torch.equal(resident.take(positions), pixels[positions])
    monkeypatch.setattr(dev, "fits_on_device", lambda nbytes, device, share=dev.RESIDENT_SHARE: False)
    hosted = dev.DevicePixels(pixels, "cpu")  # too large for the device: batches gathered on the host
    assert not hosted.resident and torch.equal(hosted.take(positions), pixels[positions])
    assert hosted.take(positions).dtype == torch.uint8  # normalised on the device, after the copy
    on_meta = dev.DevicePixels(torch.empty(4, 1, 2, 2, device="meta"), "meta")  # already there: no memory query
    assert on_meta.resident and on_meta.take(torch.tensor([1, 3])).shape == (2, 1, 2, 2)


def test_real_pool_draws_the_same_batches_wherever_its_pixels_live(monkeypatch, digits_splits):
    from pd_plugins.distillation.synthetic import RealPool

    data = digits_splits.train
    a = RealPool(data, "cpu").sample(3, 16, torch.Generator().manual_seed(1))
    monkeypatch.setattr(dev, "fits_on_device", lambda nbytes, device, share=dev.RESIDENT_SHARE: False)
    b = RealPool(data, "cpu").sample(3, 16, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert torch.equal(a, data.images(RealPool(data, "cpu").positions(3, 16, torch.Generator().manual_seed(1))))


# -- device-parametrised tests ----------------------------------------------------------------------

def test_device_marked_tests_take_the_device_fixture():
    """``pytest -m device --device cuda`` moves a marked test to the GPU only through the ``device`` fixture."""
    marked, missing = 0, []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.FunctionDef):
                continue
            marks = {d.attr for d in node.decorator_list if isinstance(d, ast.Attribute)}
            if "device" in marks:
                marked += 1
                if "device" not in [a.arg for a in node.args.args]:
                    missing.append(f"{path.name}::{node.name}")
    assert marked >= 6 and not missing, missing


@pytest.mark.device
def test_a_run_on_the_device_writes_host_loadable_artifacts(host, tmp_path, device):
    from pd_plugins.types import DistillResult

    out = tmp_path / "run"
    res, errors = _invoke(["run", *TINY_DM, "--evaluator", "dsa-step", "-E", "epochs=2", "--eval-repeats", "1",
                           "--device", device, "--out", out])
    assert res.exit_code == 0 and not errors, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device"]["type"] == dev.device_type(device)
    stages = manifest["stages"]
    if dev.is_cuda(device):
        assert manifest["device"]["deterministic"] and manifest["device"]["name"]
        assert all(stages[s]["cuda_max_memory_allocated_mib"] > 0 for s in ("distill", "eval"))
    else:
        assert not any("cuda_max_memory_allocated_mib" in e for e in stages.values())
    result = DistillResult.load(out / "distill.pt")
    assert result.images.device.type == "cpu" and torch.isfinite(result.images).all()
    assert 0.0 <= json.loads((out / "eval.json").read_text())["results"][0]["accs"][0] <= 1.0
