"""Files the suite rewrites (tables, plots, README blocks, protocols), written whole and safely.

`atomic_write` writes a temporary file in the target's own folder, syncs it to
disk and renames it over the target, so a reader, a crash or a full disk leaves
either the old file or the whole new one, never a part (the rename is atomic
within one file system, hence the same folder). It keeps what the user set on
the file: its mode (a README at 0644 stays 0644; a new file gets 0666 less the
umask, not mkstemp's 0600), its line endings (a CRLF file stays CRLF), and a
symlink (the file it points to is rewritten; the link stays a link).

`locked` serialises read-modify-write cycles on one file between processes
(two `bench tune` runs writing their winners into the same protocol).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Iterator


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Replace `path` by `data` atomically (temporary file in the same folder, fsync, rename).

    Text (`str`) is written as UTF-8 with the existing file's line endings: when the
    file being replaced uses CRLF, every LF of `data` becomes CRLF. Returns `path`.
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path  # rewrite the link's target
    target.parent.mkdir(parents=True, exist_ok=True)
    old_mode = _mode(target)
    if isinstance(data, str):
        if _uses_crlf(target):
            data = data.replace("\r\n", "\n").replace("\n", "\r\n")
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), old_mode if old_mode is not None else _default_mode())
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)
    return path


def check_rewritable(path: Path) -> None:
    """Raise OSError when `atomic_write(path, ...)` could not replace the file.

    Checked by doing what the write does (open the file for writing, create and remove
    a temporary file in its folder), so it holds for root and for ACLs alike."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    with open(target, "ab"):
        pass
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".check")
    os.close(fd)
    os.unlink(tmp)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for `path` (on `.<name>.lock` beside it) while the block runs.

    The lock file is not the file itself: `atomic_write` replaces that file by a new
    inode, which would silently drop a lock taken on the old one."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    lock = target.parent / f".{target.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock; the lock file stays (removing it would race)


def safe_name(text: str) -> str:
    """File-name-safe form of a dataset/scenario/strategy name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "unnamed"


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None


def _uses_crlf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return b"\r\n" in fh.read(1 << 16)
    except FileNotFoundError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode() -> int:
    return 0o666 & ~_umask()


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (the folder's entry), where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
