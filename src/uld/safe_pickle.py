"""Reading and writing plain pickles without running code.

Annotation and detection files of the Lesion Harvester release are pickles of dicts, lists,
tuples, numbers and numpy arrays/scalars. A pickle can name any importable callable, so a
bare ``pickle.load`` of a downloaded file can run arbitrary code. :func:`load_pickle` uses an
unpickler whose ``find_class`` admits only what such plain files need:

- ``builtins`` (``__builtin__`` in Python 2 pickles): ``set``, ``frozenset``, ``complex``,
  ``bytes``, ``bytearray`` and the plain types ``list``, ``dict``, ``tuple``, ``int``,
  ``float``, ``str``, ``bool``; ``collections.OrderedDict``;
- ``_codecs.encode`` for latin-1 only (how protocol-2 pickles store ``bytes``; numpy scalars
  written by Python 3 at protocol 2 use it);
- numpy: ``numpy.dtype``, ``numpy.ndarray``, and ``_reconstruct`` / ``scalar`` of
  ``numpy.core.multiarray`` (old numpy) or ``numpy._core.multiarray`` (numpy >= 2), and
  ``_frombuffer`` of ``numpy.core.numeric`` / ``numpy._core.numeric`` (protocol 5 arrays).

Any other global is refused with :class:`UnsafePickleError` before anything is called.
Persistent ids are refused too. Files are decoded with ``encoding="latin1"``, which is what
numpy needs for arrays pickled by Python 2.

:func:`dump_pickle` writes atomically: a temporary file in the target folder, then
``os.replace``, so a reader never sees a half-written file.
"""

from __future__ import annotations

import codecs
import collections
import gc
import io
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from uld.atomic import write_bytes

try:  # numpy >= 2 (and 1.26's forward-compatible alias)
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy < 1.26
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

__all__ = [
    "PickleReadError",
    "UnsafePickleError",
    "dump_pickle",
    "load_pickle",
    "no_gc",
]


class UnsafePickleError(ValueError):
    """The pickle names a global outside the allow-list; nothing was run."""


class PickleReadError(ValueError):
    """The file is not a readable pickle (truncated, corrupt, or not a pickle at all)."""


_BUILTINS = {
    name: getattr(__import__("builtins"), name)
    for name in (
        "set", "frozenset", "complex", "bytes", "bytearray",
        "list", "dict", "tuple", "int", "float", "str", "bool",
    )
}


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {}
    for module in ("builtins", "__builtin__"):
        for name, obj in _BUILTINS.items():
            allowed[(module, name)] = obj
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("numpy", "ndarray")] = np.ndarray
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = _multiarray._reconstruct
        allowed[(module, "scalar")] = _multiarray.scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = _numeric._frombuffer
    return allowed


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals (see the module docstring)."""

    def __init__(self, file: io.BufferedIOBase, where: str) -> None:
        super().__init__(file, encoding="latin1")
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return self._latin1_encode
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._where}: refused global {module}.{name} (only plain containers, "
                "numbers and numpy arrays/scalars may be unpickled)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._where}: refused persistent id {pid!r}")

    def _latin1_encode(self, obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        try:
            latin1 = codecs.lookup(encoding).name == "iso8859-1"
        except (LookupError, TypeError):
            latin1 = False
        if not (isinstance(obj, str) and latin1 and errors == "strict"):
            raise UnsafePickleError(
                f"{self._where}: refused global _codecs.encode with encoding {encoding!r} "
                "(only latin-1 strings are allowed)"
            )
        return obj.encode("latin1")


@contextmanager
def no_gc() -> Iterator[None]:
    """Python's cyclic garbage collector paused inside the block (restored after).

    Reading a file of half a million boxes makes millions of containers; each allocation
    past a threshold rescans the young ones, which made reading a 100,000-tracklet file
    2-3x slower. Nothing read here forms reference cycles.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_pickle(path: str | Path) -> Any:
    """Load a plain pickle (containers, numbers, numpy arrays/scalars) without running code.

    Raises :class:`UnsafePickleError` naming the file and the refused global
    (e.g. ``posix.system``), or :class:`PickleReadError` when the file is not a readable
    pickle. Both are ``ValueError``.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise PickleReadError(f"{path}: cannot open ({exc.strerror or exc})") from exc
    with handle:
        try:
            with no_gc():
                return _RestrictedUnpickler(handle, str(path)).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, ImportError, MemoryError, UnicodeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PickleReadError(f"{path}: not a readable pickle ({first})") from exc


def dump_pickle(obj: Any, path: str | Path, protocol: int = 4) -> Path:
    """Pickle ``obj`` to ``path`` atomically (:func:`uld.atomic.write_bytes`); returns ``path``.

    Protocol 4 by default (readable by Python >= 3.4). Only objects that
    :func:`load_pickle` can read back should be written: plain containers, numbers and
    numpy arrays/scalars.
    """
    return write_bytes(path, pickle.dumps(obj, protocol=protocol))
