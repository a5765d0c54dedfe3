"""Deterministic synthetic CT with lesions and realistic (RECIST-like) missing labels.

Modules: :mod:`~uld.data.synth.config` (settings, lesion and phantom types),
:mod:`~uld.data.synth.anatomy`, :mod:`~uld.data.synth.lesions`, :mod:`~uld.data.synth.phantom`
(one volume from its seed), :mod:`~uld.data.synth.labels` (the missingness models, the
benchmark's most important choice) and :mod:`~uld.data.synth.writer` (the dataset on disk).

DeepLesion cannot be downloaded on the project's machines, so the CPU benchmark runs on
phantoms written here in the generic dataset format v1 (:mod:`uld.data.dataset`).

What a volume holds
-------------------
Anatomy-like background in Hounsfield units: air, a body outline (a super-ellipse that varies
per volume and slowly along z), subcutaneous fat, a muscle wall, visceral fat, liver, spleen,
kidneys (cortex, medulla, sinus), stomach and bowel loops (gas, fluid or oral contrast),
a spine (vertebral bodies with cortex, discs, canal, posterior arch, paraspinal muscles), rib
fragments, and, in the upper slices of some volumes, lungs with pulmonary vessels and the heart.
Distractors that look like lesions on one slice: contrast-enhanced vessels (tubes running
along z and drifting slowly in x/y, present on every slice: aorta and vena cava of radius
8-12 mm, 3-6 smaller vessels of radius 2-6 mm), pulmonary vessel branches, non-enhancing tubes
(ureter-like, also on every slice), bowel loops and calcifications. Only the 9-slice context
tells a vessel from a round lesion.

Lesions are slightly irregular 3D ellipsoids with a per-kind appearance (12 kinds in six
organs, see :data:`LESION_KINDS`), diameters about 5-50 mm skewed to small, 1-8 per volume,
clustered in a volume's "disease organ" as metastases are. The image is blurred a little and
has Gaussian noise of 10-25 HU standard deviation.

Geometry
--------
Array ``[z, y, x]`` as SimpleITK returns it. Slice 0 is the most superior (head end), so lungs
lie in the first slices; columns run from the patient's right to left (radiological display),
rows from anterior to posterior. The image direction is ``diag(1, 1, -1)`` and the origin puts
the volume in LPS millimetres. Anatomy is laid out along a craniocaudal axis ``s`` in
millimetres (``s`` grows toward the feet); each volume covers a random window of it. Anatomy
sizes scale with the field of view (``size * pixel spacing``), lesion sizes are millimetres.

Ground truth and missing labels
-------------------------------
A lesion's mask is the set of voxels inside its irregular ellipsoid (voxel centres). Its 2D
box on a slice is ``[xmin, ymin, xmax + 1, ymax + 1]`` of the mask pixels (continuous pixel
coordinates), kept where the cross-section has at least ``min_cross_section_px`` pixels. The
key slice is the slice of largest cross-section (the first one on ties). ``diameter_mm`` is
the RECIST long axis: the largest distance between mask pixel centres on the key slice, plus
one pixel. Train volumes get partial labels (``missing``): ``"recist"`` measures per volume
lesions of at least ``recist_min_diameter_mm``, at most ``recist_max_per_organ`` per organ and
``recist_max_per_volume`` in all, visiting them largest first (``recist_choice="largest"``) or
in random order (``"random"``: the reader picks any measurable lesions, not the largest);
``"random"`` drops each label with probability ``missing_rate``. Val and test volumes are
fully annotated. (RECIST proper measures lymph nodes by their short axis; we use the long
axis for every lesion.)

Determinism
-----------
Volume ``i`` is drawn from ``np.random.SeedSequence(seed, spawn_key=(i,))`` alone (independent
streams for anatomy, lesions, noise and missingness), so any single volume can be regenerated
and the image does not depend on the missingness settings.
"""

from uld.data.synth.anatomy import Tissue
from uld.data.synth.config import (
    LESION_KINDS,
    SIZE_BANDS,
    Lesion,
    Phantom,
    SynthConfig,
    size_band,
    split_of,
    volume_name,
)
from uld.data.synth.labels import (
    largest_first_labels,
    matched_random_labels,
    random_labels,
    recist_labels,
    sparsity_file,
    sparsity_labels,
)
from uld.data.synth.phantom import generate_phantom, generate_volume
from uld.data.synth.writer import (
    ANNOTATION_COLUMNS,
    LESION_COLUMNS,
    format_summary,
    summarize,
    write_synthetic_dataset,
)

__all__ = [
    "ANNOTATION_COLUMNS",
    "LESION_COLUMNS",
    "LESION_KINDS",
    "SIZE_BANDS",
    "Lesion",
    "Phantom",
    "SynthConfig",
    "Tissue",
    "format_summary",
    "generate_phantom",
    "generate_volume",
    "largest_first_labels",
    "matched_random_labels",
    "random_labels",
    "recist_labels",
    "size_band",
    "sparsity_file",
    "sparsity_labels",
    "split_of",
    "summarize",
    "volume_name",
    "write_synthetic_dataset",
]
