"""Output folders that are never damaged before a command has succeeded.

A command writes everything into a temporary sibling of its ``--out`` (``.NAME.partial``
beside ``NAME``), and only when all of it is written:

- :func:`staged_folder` (``uld synth``, ``uld convert``): swaps the sibling in for ``--out``;
  an existing ``--out`` is replaced only if it is empty, this command's own unfinished output,
  or ``overwrite`` is given (otherwise nothing is touched and the error says so);
- :func:`merge_into` (``uld predict``): moves the new files into ``--out`` one by one, the
  file that marks completion last, so earlier results stay until new ones replace them.

A failure (bad input, full disk, Ctrl-C) removes the sibling and leaves ``--out`` as it was;
a killed process leaves the sibling, which the next run of the command removes.

While a dataset is being written, its folder holds :data:`UNFINISHED` (removed just before the
swap): a reader given that folder refuses it (:func:`check_finished`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from uld.atomic import write_error


def leaves_folder(name: str) -> bool:
    """Whether ``name``, used as a file or folder name inside a folder, would not name a plain
    entry of it: empty, hidden or relative (a leading ``.``, so also ``..``), absolute, holding
    a path separator or a NUL byte, or a drive (``C:``). The one check for every name that becomes a path:
    volume names of a dataset, DeepLesion series and sub-volumes, prediction outputs."""
    return (not name or name.startswith((".", "/", "\\")) or "/" in name
            or "\\" in name or "\x00" in name or (len(name) > 1 and name[1] == ":"))


UNFINISHED = ".uld-unfinished"
"""Present in a dataset folder while a command is still writing it."""


def check_out_folder(out: Path) -> None:
    """``out`` is a folder or does not exist yet; a file there is one clear line."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: --out names a file, not a folder; choose a folder")


def check_finished(root: Path) -> None:
    """Refuse a dataset folder whose writer did not finish."""
    if (root / UNFINISHED).exists():
        raise ValueError(f"{root}: unfinished dataset (the command writing it stopped before the end); "
                         "run it again")


def partial_sibling(out: Path) -> Path:
    """Where a command writes before its output is swapped or merged in."""
    out = Path(os.path.abspath(out))
    return out.parent / f".{out.name}.partial"


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def check_replaceable(out: Path, overwrite: bool, own: Callable[[Path], bool], command: str) -> None:
    """Raise unless ``out`` may be replaced: absent, empty, ``own(out)`` (this command's
    unfinished output) or ``overwrite``. Touches nothing."""
    check_out_folder(out)
    names = _entries(out)
    if not names or overwrite or own(out):
        return
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    raise FileExistsError(f"{out}: folder is not empty ({shown}); {command} replaces a folder only "
                          "with --overwrite: pass it, or choose another --out")


@contextmanager
def staged_folder(out: str | Path, overwrite: bool, own: Callable[[Path], bool],
                  command: str) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``out`` marked :data:`UNFINISHED`; when the block
    ends normally, unmark it and swap it in for ``out``. On any exception (or interrupt) the
    sibling is removed and ``out`` is untouched."""
    out = Path(os.path.abspath(out))
    check_replaceable(out, overwrite, own, command)
    stage = partial_sibling(out)
    make_stage(stage, out)
    try:
        (stage / UNFINISHED).write_text(f"{command} is writing this folder; it is not complete\n")
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise write_error(exc, out) from None
    try:
        yield stage
        (stage / UNFINISHED).unlink()
        _swap(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def make_stage(stage: Path, out: Path) -> None:
    """Create the empty folder ``stage`` (removing one a killed run left); a read-only or full
    file system is one line naming ``out``."""
    try:
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir(parents=True)
    except OSError as exc:
        raise write_error(exc, out) from None


def _swap(stage: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.old"
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage, out)


def merge_into(stage: Path, out: Path, last: Sequence[str], stale: Sequence[str] = ()) -> None:
    """Move every file of ``stage`` into ``out`` (sub-folders alike): first the files not in
    ``last``; then the files of ``out`` matching a ``stale`` glob that this merge did not
    bring are removed; then ``last`` in its order (the completion marker at the end).
    ``stage`` is removed afterwards. Before the first move, ``last`` files already in
    ``out`` are removed so that no completion marker stands beside a half-merged result."""
    out.mkdir(parents=True, exist_ok=True)
    for name in last:
        (out / name).unlink(missing_ok=True)
    files = sorted(p for p in stage.rglob("*") if p.is_file())
    brought = {out / p.relative_to(stage) for p in files}
    for path in files:
        if path.relative_to(stage).as_posix() not in last:
            _move(path, out / path.relative_to(stage))
    for pattern in stale:
        for old in out.glob(pattern):
            if old.is_file() and old not in brought:
                old.unlink()
    for name in last:
        if (stage / name).is_file():
            _move(stage / name, out / name)
    shutil.rmtree(stage, ignore_errors=True)


def _move(path: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
