"""Claims: a run marks a cell it is about to train, so that another run on the same results skips it.

A claim is a file next to the record (`<record>.claim`), created exclusively
(O_EXCL) by the run's main process before the cell is dispatched and removed once
its record is stored. It holds the run's pid, host, start time and run id, and
the claiming process keeps an exclusive lock (flock) on it while it lives.

- A claim from this host whose process is gone is stale: the next run takes it
  over. Taking over needs the lock, which only one process can get, so two runs
  that find the same stale claim do not both take it.
- A claim from another host is honoured (its pid cannot be checked from here)
  unless the run is given `force`.
- A claim held by a live process on this host is always honoured.
- A stale claim beside a record that is already done (its run was killed between storing
  the record and releasing the claim) is cleared by the next run that finds the cell done.
These functions do not care how the cell is executed (worker processes, a
cluster): claim -> dispatch -> store the record -> release, all in the client.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = socket.gethostname()
# A claim file still empty after this long was left by a process that died between creating and writing it.
EMPTY_GRACE_S = 30.0


def claim_path(record: Path) -> Path:
    return record.with_suffix(".claim")


@dataclass
class Claim:
    """A claim this process holds: keep it until the record is stored, then `release`."""

    path: Path
    fd: int
    taken_over: dict[str, Any] | None = None  # the stale or foreign claim it replaced

    def release(self) -> None:
        # Remove the file only while it is still ours, then drop the lock.
        try:
            if _same_file(self.path, self.fd):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)


class Held(Exception):
    """The cell is claimed by another run; `owner` is what its claim file says."""

    def __init__(self, path: Path, owner: dict[str, Any] | None):
        self.path, self.owner = path, owner or {}
        super().__init__(describe(self.owner))


def describe(owner: dict[str, Any]) -> str:
    started = owner.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')} since {when}"


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _write(fd: int, run_id: str) -> None:
    info = {"pid": os.getpid(), "host": HOST, "started": time.time(), "run_id": run_id}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    os.fsync(fd)


def _read(fd: int) -> dict[str, Any] | None:
    try:
        data = json.loads(os.pread(fd, 65536, 0) or b"null")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def claim(record: Path, run_id: str, force: bool = False) -> Claim:
    """Claim the cell whose record goes to `record`; raises Held when another run has it."""
    path = claim_path(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(20):  # each retry follows a claim that vanished or was replaced under us
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        else:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _write(fd, run_id)
            return Claim(path, fd)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue  # released meanwhile: try to create it again
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its owner is alive and holds it (or is taking it over right now)
            raise Held(path, _read_path(path)) from None
        # We hold the lock, so no live claimer on this host does; is it still the file at `path`?
        if not _same_file(path, fd):
            os.close(fd)
            continue
        owner = _read(fd)
        if not _stale(owner, path, force):
            os.close(fd)
            raise Held(path, owner)
        _write(fd, run_id)
        return Claim(path, fd, taken_over=owner or {})
    raise Held(path, _read_path(path))


def clear_stale(record: Path) -> bool:
    """Remove the stale claim next to a record that is already done: a run killed between
    storing a record and releasing its claim leaves one, and no later run would claim the
    cell again to take it over. A claim held by a live run stays. True when one was removed."""
    if not claim_path(record).exists():
        return False
    try:
        claim(record, run_id="clear-stale").release()
    except Held:
        return False
    return True


def _same_file(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _stale(owner: dict[str, Any] | None, path: Path, force: bool) -> bool:
    if owner is None:  # empty or damaged: its creator died before writing it, or is writing it now
        try:
            return time.time() - path.stat().st_mtime > EMPTY_GRACE_S
        except FileNotFoundError:
            return True
    if owner.get("host") != HOST:
        return force
    return not _alive(owner.get("pid"))


def _read_path(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
