"""Write files so that a reader never sees half of one: a temporary file beside the target,
renamed over it (``os.replace``) only once it is complete."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block ends
    normally, delete it when the block raises. Creates the parent folder.

    ``suffix`` matters to writers that pick the format from the name (``.nii.gz``, ``.png``).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as exc:
        raise write_error(exc, path) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(exc, path) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_error(exc: OSError, path: str | Path) -> OSError:
    """One line for a failed write of ``path``: "no space left on device, PATH" and the like
    (the temporary file's name, which the OS quotes, means nothing to a user)."""
    reasons = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied", errno.ENOTDIR: "a parent is a file, not a folder",
               errno.EISDIR: "a folder is in the way of the file"}
    reason = reasons.get(exc.errno or 0)
    if reason is None:
        return exc
    out = OSError(f"{reason}, {path}")
    out.errno = exc.errno
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))
