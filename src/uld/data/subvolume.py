"""DeepLesion sub-volume names, ``<folder>_<first:03d>-<last:03d>`` (Lesion Harvester's naming).

``<folder>`` is ``<patient:06d>_<study:02d>_<series:02d>``; a sub-volume is one contiguous run
of a series' slices, both ends inclusive. Nothing but the standard library and
:func:`uld.outdir.leaves_folder` is imported here, so the evaluation can parse names without
loading an image library.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from uld.outdir import leaves_folder

_SUBVOLUME = re.compile(r"^(?P<folder>\d+_\d+_\d+)_(?P<first>\d+)-(?P<last>\d+)$")
_FOLDER = re.compile(r"^\d+_\d+_\d+$")


class DeepLesionError(ValueError):
    """Bad DeepLesion input; the one-line message names the file, row or volume and the value."""


def contiguous_runs(slice_numbers: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted runs of consecutive numbers: ``[3, 1, 2, 7, 8]`` -> ``[(1, 3), (7, 8)]``.

    Duplicates are ignored; ends are inclusive; an empty input gives ``[]``.
    """
    numbers = sorted({int(n) for n in slice_numbers})
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def check_plain(name: str, what: str) -> None:
    """Refuse a name that would leave the data folder (:func:`uld.outdir.leaves_folder`)."""
    if leaves_folder(name):
        raise DeepLesionError(f"{what} {name!r} is not a plain name: it would leave the data folder")


def subvolume_name(folder: str, first: int, last: int) -> str:
    """``f"{folder}_{first:03d}-{last:03d}"``, e.g. ``001344_01_01_012-024`` (ends inclusive)."""
    check_plain(folder, "series folder")
    if not _FOLDER.match(folder):
        raise DeepLesionError(f"series folder {folder!r} is not <patient>_<study>_<series>")
    if not 0 <= first <= last:
        raise DeepLesionError(f"sub-volume of {folder!r}: slices {first}-{last} are not first <= last")
    return f"{folder}_{first:03d}-{last:03d}"


def parse_subvolume_name(name: str) -> tuple[str, int, int]:
    """``"001344_01_01_012-024"`` -> ``("001344_01_01", 12, 24)``.

    Raises :class:`DeepLesionError` for a name that is not ``<folder>_<first>-<last>`` with
    ``first <= last``, or that would leave the data folder (``..``, ``/``, ``\\``, absolute).
    """
    if not isinstance(name, str):
        raise DeepLesionError(f"sub-volume name {name!r} is not a string")
    check_plain(name, "sub-volume name")
    match = _SUBVOLUME.match(name)
    if not match:
        raise DeepLesionError(
            f"sub-volume name {name!r} is not <patient>_<study>_<series>_<first>-<last> "
            "(e.g. 001344_01_01_012-024)"
        )
    first, last = int(match["first"]), int(match["last"])
    if first > last:
        raise DeepLesionError(f"sub-volume name {name!r}: first slice {first} > last slice {last}")
    return match["folder"], first, last
