"""Real Ray clusters on 127.0.0.1 for tests: a head (``ray start --head``) and optional worker nodes
(``ray start --address``), each a ``--block`` process in its own session with its own temp folder,
ports and token. A worker node may get a private view of the filesystem (a mount namespace with an
empty tmpfs over a folder), so on one machine it shares no output folder with the driver, as a node
of a real cluster would not. Stopping kills only the sessions these nodes started."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch
import yaml

from tests.proc_runs import REPO, env

RAY = str(Path(sys.executable).with_name("ray"))
# ports every node opens; the head also serves GCS (port) and Ray Client
NODE_PORTS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
              "metrics-export-port", "node-manager-port", "object-manager-port")
HEAD_PORTS = ("port", "ray-client-server-port", *NODE_PORTS)


def _free_ports(names) -> dict[str, int]:
    socks = [socket.socket() for _ in names]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = {name: s.getsockname()[1] for name, s in zip(names, socks)}
    for s in socks:
        s.close()
    return ports


def _session_pids(sid: int) -> list[int]:
    """Processes of session ``sid`` (a node started in its own session), read from /proc."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[3]) == sid:
                    pids.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def _unshare() -> list[str]:
    """A new mount namespace (as root, or as a mapped root in a new user namespace otherwise)."""
    return ["unshare", "--mount", "--propagation", "private", *([] if os.geteuid() == 0 else ["--map-root-user"])]


def private_view_error() -> Optional[str]:
    """Why a node cannot get a private filesystem view here (None when it can)."""
    if shutil.which("unshare") is None:
        return "`unshare` (util-linux) is not installed"
    with tempfile.TemporaryDirectory() as d:
        res = subprocess.run([*_unshare(), "sh", "-c", 'mount -t tmpfs pd-probe "$0"', d], capture_output=True,
                             text=True, timeout=30)
    if res.returncode != 0:
        return f"cannot mount in a private mount namespace: {res.stderr.strip() or res.returncode}"
    return None


class RayNode:
    """One ``ray start --block`` process (its own session, temp folder and scratch folder for TMPDIR)."""

    def __init__(self, args: list[str], env: dict, log: Path, hide: Optional[Path] = None):
        self.temp = Path(tempfile.mkdtemp(prefix="pdray-", dir="/tmp"))  # short: socket paths are length-limited
        self.scratch = self.temp / "scratch"  # the node's TMPDIR: its workers' node-local folders
        self.scratch.mkdir()
        self.log = log
        cmd = [RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
               f"--temp-dir={self.temp}", *args]
        if hide is not None:  # an empty tmpfs over `hide`, seen only by this node's processes
            cmd = [*_unshare(), "sh", "-c", 'mount -t tmpfs pd-node-private "$0" && exec "$@"', str(hide), *cmd]
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(cmd, env={**env, "TMPDIR": str(self.scratch)}, cwd=REPO, stdout=fh,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.monotonic()
        while "Ray runtime started" not in log.read_text():
            if self.proc.poll() is not None or time.monotonic() - t0 > 180:
                self.stop()
                raise RuntimeError(f"ray start failed:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """Node death: SIGKILL every process of the node (raylet, object store, workers) at once."""
        for pid in [self.proc.pid, *_session_pids(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=15)

    def stop(self) -> None:
        sid = self.proc.pid
        try:
            os.killpg(sid, signal.SIGTERM)
            self.proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        for pid in _session_pids(sid):  # whatever did not stop: only this node's processes
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=15)
        shutil.rmtree(self.temp, ignore_errors=True)


class Cluster:
    """A head node with ``cpus`` CPUs; :meth:`add_node` joins worker nodes to it."""

    def __init__(self, root: Path, cpus: int = 2, ray_env: Optional[dict] = None):
        self.root = root
        # token authentication (the `ray start` default) with a token of this cluster only
        self.env = {**env(root / "cache"), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "RAY_USAGE_STATS_ENABLED": "0", **(ray_env or {})}
        self.env.pop("RAY_ADDRESS", None)
        ports = _free_ports(HEAD_PORTS)
        self.address = f"127.0.0.1:{ports['port']}"
        self.head = RayNode(["--head", f"--num-cpus={cpus}", "--include-dashboard=false",
                             *(f"--{k}={v}" for k, v in ports.items())], self.env, root / "ray-head.log")
        self.workers: list[RayNode] = []

    def add_node(self, cpus: int = 1, hide: Optional[Path] = None) -> RayNode:
        """Join a worker node with ``cpus`` CPUs; with ``hide``, that folder is an empty tmpfs for it."""
        node = RayNode([f"--address={self.address}", f"--num-cpus={cpus}",
                        *(f"--{k}={v}" for k, v in _free_ports(NODE_PORTS).items())],
                       self.env, self.root / f"ray-node-{len(self.workers) + 1}.log", hide)
        self.workers.append(node)
        return node

    def pd(self, *args) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "pd_plugins", *map(str, args)], env=self.env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            node.stop()


def sweep_file(path: Path, grid: dict, fixed: dict) -> Path:
    """Write a sweep file named after ``path``'s stem."""
    path.write_text(yaml.safe_dump({"name": path.stem, "grid": grid, "fixed": fixed}))
    return path


def finish(proc: subprocess.Popen, timeout: float = 400) -> str:
    """The stdout of a command that must succeed."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def same_cell(a: Path, b: Path) -> None:
    """Two run folders hold the same distilled images and the same evaluation."""
    da, db = (torch.load(p / "distill.pt", weights_only=True) for p in (a, b))
    assert da["images"].equal(db["images"])
    ea, eb = (json.loads((p / "eval.json").read_text())["results"] for p in (a, b))
    assert ea == eb
