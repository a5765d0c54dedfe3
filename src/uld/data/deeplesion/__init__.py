"""DeepLesion: ``DL_info.csv``, the 16-bit PNG slices, the paper's data split, conversion.

Modules: :mod:`~uld.data.deeplesion.dl_info`, :mod:`~uld.data.deeplesion.images`,
:mod:`~uld.data.deeplesion.split`, :mod:`~uld.data.deeplesion.convert`; sub-volume names are
:mod:`uld.data.subvolume` (no dependencies, so the evaluation can parse them).

Layout read here (facts: ``docs/DATA.md``)::

    ROOT/
      DL_info.csv                          one row per lesion, 18 columns
      Images_png/<folder>/<slice:03d>.png  16-bit unsigned PNG, HU = pixel - 32768

``<folder>`` is ``<patient:06d>_<study:02d>_<series:02d>``; slice numbers may have four digits.
A folder holds one or more *contiguous runs* of slices; each run is a *sub-volume* named
``<folder>_<first:03d>-<last:03d>`` (both ends inclusive), Lesion Harvester's naming.

Conventions of this module (one for everything it returns)
----------------------------------------------------------

- **Pixels are 0-based.** ``DL_info.csv`` writes 1-based pixel coordinates; :func:`read_dl_info`
  subtracts 1 from ``Measurement_coordinates`` and ``Bounding_boxes`` once, when reading.
  Lesion Harvester's pickles carry DL_info's boxes as written, i.e. also 1-based: the 58
  boxes of ``DL_info_excerpt.csv`` whose sub-volume is in ``RECIST-Box-Test``,
  ``RECIST-Box-Valid``, ``Revised-Test1071``, ``Revised-Train100`` or ``Revised-Train744``
  (75 box pairs) all agree within 0.0003 px (the pickles round to three decimals), where a
  0-based copy would be 1 px off. :func:`paper_split` subtracts 1 from every pickle box,
  also from the boxes the Lesion Harvester annotators added (no DL_info counterpart; two of
  them end exactly at 512, i.e. they were clipped to the 512-pixel image: consistent with
  1-based, and at worst 1 px off if those were 0-based).
  Boxes are ``[x1, y1, x2, y2]`` float pixels, x = column, y = row.
- **z is the offset from the sub-volume's first slice** (``slice_number - first``), the
  convention of Lesion Harvester's files and of the generic dataset format.
- Volumes are ``hu[z, y, x]`` int16 Hounsfield units with ``spacing_xyz = (sx, sy, sz)`` mm.

Errors are :class:`DeepLesionError` (a ``ValueError``) with one line naming the file, row,
column and value. Functions that walk many rows take ``on_error``: ``"stop"`` raises the first
error, ``"skip"`` leaves the offending row (or sub-volume) out, keeps its message and goes on.
"""

from uld.data.deeplesion.convert import ANNOTATION_COLUMNS, convert_deeplesion
from uld.data.deeplesion.dl_info import (
    DL_INFO_COLUMNS,
    SPLIT_CODES,
    DLInfo,
    DLInfoRecord,
    read_dl_info,
    spacing_by_folder,
)
from uld.data.deeplesion.images import HU_OFFSET, DeepLesionImages, read_png_slice
from uld.data.deeplesion.split import HARVESTER_FILES, PaperSplit, paper_split, to_zero_based
from uld.data.subvolume import DeepLesionError, contiguous_runs, parse_subvolume_name, subvolume_name

__all__ = [
    "ANNOTATION_COLUMNS",
    "DL_INFO_COLUMNS",
    "HARVESTER_FILES",
    "HU_OFFSET",
    "SPLIT_CODES",
    "DLInfo",
    "DLInfoRecord",
    "DeepLesionError",
    "DeepLesionImages",
    "PaperSplit",
    "contiguous_runs",
    "convert_deeplesion",
    "paper_split",
    "parse_subvolume_name",
    "read_dl_info",
    "read_png_slice",
    "spacing_by_folder",
    "subvolume_name",
    "to_zero_based",
]
