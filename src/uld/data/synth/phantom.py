"""One phantom from its seed: geometry, anatomy, lesions, acquisition, then the volume's labels
(:func:`generate_phantom`, :func:`generate_volume`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from uld.data.synth.anatomy import Canvas, draw_anatomy, sample_geometry
from uld.data.synth.config import Lesion, Phantom, SynthConfig, split_of, volume_name
from uld.data.synth.labels import random_labels, recist_labels
from uld.data.synth.lesions import acquire, place_lesions
from uld.data.volume import Volume


def generate_phantom(config: SynthConfig, index: int) -> Phantom:
    """Volume ``index`` of the dataset ``config`` describes, with its hidden truth.

    Depends only on ``config`` and ``index`` (see the module docstring); labels follow the
    volume's split and ``config.missing``.
    """
    split = split_of(config, index)
    name = volume_name(index)
    anat_ss, lesion_ss, noise_ss, missing_ss = np.random.SeedSequence(
        config.seed, spawn_key=(index,)).spawn(4)
    rng = np.random.default_rng(anat_ss)
    geo, lung_base = sample_geometry(config, rng)
    canvas = Canvas(geo)
    anatomy = draw_anatomy(canvas, lung_base, rng)
    lesions, lesion_map = place_lesions(config, geo, canvas, anatomy, name,
                                         np.random.default_rng(lesion_ss))
    hu = acquire(canvas.hu, geo, config, np.random.default_rng(noise_ss))
    if split == "train" and lesions:
        if config.missing == "recist":
            labeled = recist_labels([les.diameter_mm for les in lesions],
                                    [les.organ for les in lesions],
                                    config.recist_min_diameter_mm, config.recist_max_per_organ,
                                    config.recist_max_per_volume,
                                    None if config.recist_choice == "largest"
                                    else np.random.default_rng(missing_ss))
        else:
            labeled = random_labels(len(lesions), config.missing_rate,
                                    np.random.default_rng(missing_ss))
        lesions = [dataclasses.replace(les, labeled=bool(lab)) for les, lab in zip(lesions, labeled)]
    size = geo.size
    volume = Volume(
        hu=hu, spacing_xyz=(geo.px, geo.px, geo.dz),
        origin_xyz=(-(size - 1) / 2 * geo.px, -(size - 1) / 2 * geo.px, -geo.s0),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    )
    return Phantom(name=name, split=split, volume=volume, lesions=tuple(lesions),
                   tissue=canvas.tissue, lesion_map=lesion_map)


def generate_volume(config: SynthConfig, index: int) -> tuple[Volume, list[Lesion]]:
    """Volume ``index`` (``hu (ndarray[Z, Y, X], int16)``) and its lesions' ground truth."""
    phantom = generate_phantom(config, index)
    return phantom.volume, list(phantom.lesions)
