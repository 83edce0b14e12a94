"""Atomic file writes: a reader sees the old file or the new one, never a half-written mix.

Every file exactflow writes (checkpoints, run records, samples, pictures) goes through
:func:`write_atomic`: the content is written to a temporary file in the destination folder,
flushed and fsynced, renamed onto the final name with ``os.replace`` (atomic on POSIX and
Windows), and the folder is fsynced so the rename survives a crash.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["temporaries", "write_atomic"]


def temporaries(path: Path) -> list[Path]:
    """Temporary files of ``path`` left behind by writers that were killed."""
    return list(path.parent.glob(f".{path.name}.*.tmp"))


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op on Windows)."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cannot_write(path: Path, error: OSError) -> OSError:
    # Name the destination, not the temporary file, in the message a user sees.
    return OSError(error.errno, f"cannot write ({error.strerror or error})", os.fspath(path))


def write_atomic(
    path: str | os.PathLike, write: Callable[[IO[Any]], object], binary: bool = True
) -> Path:
    """Write ``path`` atomically with ``write(file)``; the folder is created if needed.

    Args:
        path: Destination file.
        write: Writes the content to the open file object it is given.
        binary: Open the temporary file in binary (``"wb"``) or text (``"w"``) mode.

    Returns:
        The path written.

    Raises:
        OSError: The file cannot be written; its ``filename`` is ``path``. Nothing is left
            behind, and an existing ``path`` is untouched.

    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Mode 0o666 lets the umask decide the permissions, as for any file the user writes.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp, flags, 0o666)
    except OSError as e:
        raise _cannot_write(path, e) from None
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):  # a full disk, say
            raise _cannot_write(path, e) from None
        raise
    _fsync_directory(path.parent)
    return path
