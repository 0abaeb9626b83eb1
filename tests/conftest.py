"""Shared fixtures. Third-party plugins installed in the environment are not loaded
(PD_LOAD_PLUGINS=""), so tests see only the built-ins plus what they register."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("PD_LOAD_PLUGINS", "")
os.environ.pop("PD_STRICT_PLUGINS", None)

import pytest  # noqa: E402

pytest_plugins = ["pd_plugins.testing"]  # the plugin authors' kit: tiny_dataset, run_context, pd_host, ...

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="device of the tests marked `device` (cpu, cuda, cuda:N; default cpu): "
                          "`pytest -m device --device cuda` runs them on a GPU (benchmarks/gpu_check.py, docs/gpu.md)")


def pytest_configure(config):
    requested = config.getoption("--device")
    if requested != "cpu":  # a device this machine lacks is a usage error, not a run of skipped tests
        from pd_plugins.errors import DeviceError
        from pd_plugins.training.device import check_device

        try:
            check_device(requested)
        except DeviceError as exc:
            raise pytest.UsageError(f"--device {requested}: {exc}") from None


@pytest.fixture(scope="session")
def _device_configured(request):
    from pd_plugins.training.device import configure

    requested = request.config.getoption("--device")
    configure(requested)  # what pd-run does: deterministic kernels on CUDA
    return requested


@pytest.fixture
def device(_device_configured):
    """The device of a test marked ``@pytest.mark.device``: ``--device`` (cpu unless given)."""
    return _device_configured


@pytest.fixture(scope="session", autouse=True)
def _threads():
    from pd_plugins.training.allocator import keep_freed_memory

    keep_freed_memory()  # the tests run under the allocator setting pd-run uses
    import torch

    # one thread by default: on a shared, oversubscribed CPU two spinning OpenMP threads run
    # ~10x slower than one; PD_TEST_THREADS raises it on a dedicated machine
    torch.set_num_threads(int(os.environ.get("PD_TEST_THREADS", "1")))
    yield


@pytest.fixture
def host(pd_host):
    """A fresh plugin host with only the built-ins, installed as the process host (the kit's ``pd_host``)."""
    return pd_host


@pytest.fixture(scope="session")
def digits_splits():
    from pd_plugins.data.builtin import digits

    return digits(None)


@pytest.fixture
def ctx(tmp_path):
    from pd_plugins.pipeline.context import RunContext

    return RunContext(seed=0, device="cpu", work_dir=tmp_path, stage="test")


@pytest.fixture(scope="module")
def repro():
    """docs/reproduction.py loaded as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduction", Path(__file__).resolve().parents[1] / "docs"
                                                  / "reproduction.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared data file {path} not available")
    return path


@pytest.fixture
def one_torch_thread():
    """Run the test with one torch thread (float sums then split the same way), restoring the count after."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
