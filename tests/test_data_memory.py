"""Lean data loading: MNIST train+test pixels live in one uint8 tensor per split (<= 0.2 GB)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import shared_file

_PROBE = r"""
import json, resource, sys
import torch
from pd_plugins.data.builtin import npz
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
s = npz(sys.argv[1], name="mnist")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"dtype": [str(s.train.pixels.dtype), str(s.test.pixels.dtype)],
                  "bytes": s.train.pixels.nbytes + s.test.pixels.nbytes,
                  "n": [len(s.train), len(s.test)], "rss_growth": (after - before) * 1024}))
"""


@pytest.mark.slow
@pytest.mark.real_data
def test_mnist_pixels_fit_in_0_2_gb():
    path = shared_file("mnist.npz")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, env=env,
                         check=True, timeout=300)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["n"] == [60000, 10000]
    assert info["dtype"] == ["torch.uint8", "torch.uint8"]
    assert info["bytes"] <= 0.2e9
    # the whole load (numpy arrays + tensors + temporaries) raises the peak by at most 0.2 GB
    assert info["rss_growth"] <= 0.2e9, info
