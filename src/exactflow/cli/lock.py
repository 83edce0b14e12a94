"""The lock of a run folder, and replacing a run folder by a new one.

A run folder is written only by the process holding its lock, ``RUN/.lock``: a file created with
``O_EXCL`` that holds the process id. A lock whose process is gone (killed) is taken over.
``fit --overwrite`` builds the new run in a fresh hidden sibling folder and swaps it in at the end.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import time
from pathlib import Path

from .errors import CommandError
from .runs import LOCK_FILE

__all__ = ["RunLock", "remove_stale_siblings", "staging_folder", "swap_in"]


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would not probe there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _holder(lock: Path) -> int | None:
    """The process id in a lock file; ``None`` if it holds none (or the file is gone)."""
    try:
        text = lock.read_text()[:32].strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and 0 < int(text) < 1 << 31 else None


class RunLock:
    """The lock of a run folder: ``folder/.lock``, created with ``O_EXCL``, holds the pid.

    A second process gets a :class:`CommandError` naming the holder. A lock whose process is
    gone (killed) is taken over, and the temporary files its writers left are removed.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with RunLock(folder):
        ...     (folder / LOCK_FILE).read_text().strip() == str(os.getpid())
        True
        >>> (folder / LOCK_FILE).exists()
        False

    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.held = False

    @property
    def path(self) -> Path:
        return self.folder / LOCK_FILE

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        for attempt in range(2):
            try:
                # Not write_atomic: the lock's whole point is that creating it fails if it exists.
                fd = os.open(self.path, flags, 0o644)
            except FileExistsError:
                pid = _holder(self.path)
                young = pid is None and self._age() < 5.0  # being written by its creator
                if attempt or young or (pid is not None and _alive(pid)):
                    who = f"process {pid}" if pid is not None else "another process"
                    raise CommandError(
                        f"{self.folder} is in use by {who} (lock {self.path}); wait for it to"
                        " finish, or remove the lock file if no such process runs"
                    ) from None
                self.path.unlink(missing_ok=True)  # its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.held = True
            self._remove_temporaries()
            return

    def _age(self) -> float:
        try:
            return time.time() - self.path.lstat().st_mtime
        except OSError:
            return math.inf

    def _remove_temporaries(self) -> None:
        """Temporaries of killed writers: every writer of the folder holds this lock."""
        for folder in (self.folder, self.folder / "figures"):
            for stale in folder.glob(".*.tmp"):
                if stale.is_file():
                    stale.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held and _holder(self.path) == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False


# ---------------------------------------------------------------------------- replacing a run
def staging_folder(out: Path) -> Path:
    """A fresh hidden sibling of ``out`` in which a replacement run is built."""
    folder = out.parent / f".{out.name}.new-{secrets.token_hex(6)}"
    folder.mkdir()
    return folder


def remove_stale_siblings(out: Path) -> None:
    """Remove replacement runs of ``out`` whose process was killed before it swapped them in."""
    for sibling in out.parent.glob(f".{out.name}.*-*"):
        kind = sibling.name[len(out.name) + 2 :].split("-")[0]
        pid = _holder(sibling / LOCK_FILE)
        if kind in ("new", "old") and sibling.is_dir() and not (pid and _alive(pid)):
            shutil.rmtree(sibling, ignore_errors=True)


def swap_in(new: Path, out: Path) -> None:
    """Replace the run folder ``out`` by ``new``; the old folder is removed afterwards."""
    old = out.parent / f".{out.name}.old-{secrets.token_hex(6)}"
    os.replace(out, old)
    try:
        os.replace(new, out)
    except OSError:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
