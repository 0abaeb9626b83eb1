"""Claim files: one holder at a time for a run folder or a cache entry, across processes and hosts.

A lock is a small JSON file (host, pid, token, time) that appears atomically with
``os.link`` -- which fails when the file exists, also on NFS -- so a contender either
creates it or sees the holder's complete record. The holder refreshes the file's mtime
from a heartbeat thread; a claim is *stale* when its holder is a dead process on this
host (noticed at once) or its heartbeat is older than ``stale_after`` seconds (another
host that died). A stale claim is broken under a second, short-lived claim so that two
contenders never both take it over.

Use :func:`cache_fill` around filling a cache entry (wait for the holder, then check the
entry again) and ``FileLock(...).acquire(wait=0)`` to refuse work that is already running.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from pd_plugins.errors import PdPluginsError

STALE_AFTER = 60.0  # seconds without a heartbeat after which another host's claim is abandoned


class LockBusyError(PdPluginsError):
    """Another live process holds the claim."""


def host_id() -> str:
    """This machine: hostname plus boot id (two containers may share a hostname, not a boot)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = ""
    return f"{socket.gethostname()}:{boot}" if boot else socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


class FileLock:
    """An exclusive claim on ``path`` (a file next to the guarded resource)."""

    def __init__(self, path, *, stale_after: float = STALE_AFTER, what: str = "resource",
                 wait: Optional[float] = None):
        """``wait``: how long ``with lock:`` waits for the holder (None: until free or stale; 0: refuse at once)."""
        self.path = Path(path)
        self.wait = wait
        self.stale_after = float(stale_after)
        self.what = what
        self.token: Optional[str] = None
        self._stop: Optional[threading.Event] = None

    # -- state of the claim ------------------------------------------------------------
    def holder(self) -> Optional[dict]:
        """The current holder's record, or None when nobody holds the claim."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: judged by its age alone

    def _age(self, path: Path) -> float:
        try:
            return time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def is_stale(self, info: dict) -> bool:
        if info.get("host") == host_id() and isinstance(info.get("pid"), int) and not pid_alive(info["pid"]):
            return True
        return self._age(self.path) > self.stale_after

    # -- taking and giving back -----------------------------------------------------------
    def try_acquire(self) -> bool:
        """Take the claim if it is free or stale; never blocks."""
        if self.token is not None:
            raise RuntimeError(f"{self.path} is already held by this FileLock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        record = {"host": host_id(), "pid": os.getpid(), "token": token, "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        tmp = self.path.with_name(f".{self.path.name}.{token}.tmp")
        tmp.write_text(json.dumps(record))
        try:
            for _ in range(2):  # second try after breaking a stale claim
                try:
                    os.link(tmp, self.path)
                except FileExistsError:
                    info = self.holder()
                    if info is None or not self.is_stale(info):
                        if info is None:
                            continue  # released between link and read: try again
                        return False
                    self._break(info)
                    continue
                self.token = token
                self._start_heartbeat()
                return True
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def acquire(self, wait: Optional[float] = None, poll: float = 0.2) -> "FileLock":
        """Take the claim, waiting up to ``wait`` seconds (None: until free or stale; 0: refuse at once)."""
        deadline = None if wait is None else time.monotonic() + wait
        while not self.try_acquire():
            if deadline is not None and time.monotonic() >= deadline:
                info = self.holder() or {}
                host = str(info.get("host", "?")).split(":")[0]
                who = f"pid {info.get('pid', '?')} on {host} since {info.get('since', '?')}"
                raise LockBusyError(f"{self.what} is in use by another process ({who}); wait for it to finish, "
                                    f"or delete {self.path} if that process is gone")
            time.sleep(poll)
        return self

    def release(self) -> None:
        if self.token is None:
            return
        if self._stop is not None:
            self._stop.set()
        info = self.holder()
        if info and info.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        self.token = None

    def __enter__(self) -> "FileLock":
        return self.acquire(self.wait)

    def __exit__(self, *exc) -> None:
        self.release()

    # -- internals ---------------------------------------------------------------------------
    def _break(self, info: dict) -> None:
        """Remove the stale claim ``info``, unless someone else is already doing so or it changed."""
        breaker = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if self._age(breaker) > 30:  # a breaker that died while breaking
                breaker.unlink(missing_ok=True)
            return
        try:
            current = self.holder()
            if current is not None and current.get("token") == info.get("token") and self.is_stale(current):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)
            breaker.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        stop = threading.Event()
        self._stop = stop
        token, path, every = self.token, self.path, max(0.5, self.stale_after / 4)

        def beat():
            while not stop.wait(every):
                try:
                    if json.loads(path.read_text()).get("token") != token:
                        return
                    os.utime(path)
                except (OSError, ValueError):
                    return

        threading.Thread(target=beat, name=f"heartbeat {path.name}", daemon=True).start()


@contextmanager
def cache_fill(entry_path, what: str = "cache entry"):
    """Hold the claim of cache entry ``entry_path`` (``None``: no cache, no claim) while filling it.

    Waits while another live process fills the same entry; the caller then checks the entry
    again before computing it, so it is never computed twice nor read half-written.
    """
    if entry_path is None:
        yield
        return
    entry_path = Path(entry_path)
    with FileLock(entry_path.with_name(entry_path.name + ".lock"), what=f"{what} {entry_path.name}"):
        yield
