"""uld predict --dicom-sr: the SR read back with highdicom matches NAME.lesions.json exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from uld.config import load_config
from uld.data.sources import scan_sources
from uld.data.volume import read_scan
from uld.infer.dicom_sr import SR_SUFFIX, box_polyline, write_dicom_sr
from uld.infer.export import lesions_from_tracklets, write_volume_outputs
from uld.infer.scans import predict_scans

hd = pytest.importorskip("highdicom")
pydicom = pytest.importorskip("pydicom")

SERIES = "1.2.826.0.1.3680043.2.1125.1.77"


def write_series(folder: Path, hu: np.ndarray, orientation: str = "1\\0\\0\\0\\1\\0",
                 spacing=(0.7, 0.8, 2.5), origin=(-100.0, -120.0, 30.0)) -> None:
    """A CT series, one file per slice in reverse name order; ``orientation`` is written as
    ImageOrientationPatient (``-1\\0\\0\\0\\1\\0``: columns run to the patient's right, so
    ``read_scan`` flips them into LPS)."""
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(hu.shape[0]):
        image = sitk.GetImageFromArray(hu[z].astype(np.int16))
        image.SetSpacing(spacing[:2])
        position = (origin[0], origin[1], origin[2] + z * spacing[2])
        for tag, value in {
            "0008|0060": "CT", "0020|000e": SERIES, "0020|000d": SERIES + ".0", "0010|0020": "PAT1",
            "0020|0037": orientation, "0020|0032": "\\".join(f"{v:g}" for v in position),
            "0020|0013": str(z + 1), "0018|0050": f"{spacing[2]:g}", "0008|0018": f"{SERIES}.{z + 1}",
        }.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{hu.shape[0] - z:03d}.dcm"))
        writer.Execute(image)


def _bright_box(hu_slice: np.ndarray) -> list[float]:
    rows, cols = np.nonzero(hu_slice > 500)
    return [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]


def _read_back(sr_path: Path, lesions_json: Path) -> list[tuple[dict, object]]:
    """Pair each measurement group of the SR with the lesion of the JSON it names."""
    sr = hd.sr.srread(sr_path)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    document = json.loads(lesions_json.read_text())
    by_id = {f"lesion-{L['id']}": L for L in document["lesions"]}
    groups = sr.content.get_planar_roi_measurement_groups()
    assert sorted(g.tracking_identifier for g in groups) == sorted(by_id)
    return [(by_id[g.tracking_identifier], g) for g in groups]


def _referenced_uid(group) -> str:
    return str(group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


@pytest.mark.parametrize("orientation", ["1\\0\\0\\0\\1\\0", "-1\\0\\0\\0\\1\\0"])
def test_sr_regions_reference_the_peak_slice_file_and_enclose_the_lesion(tmp_path, orientation):
    hu = np.full((6, 24, 32), -50, dtype=np.int16)
    hu[3, 5:11, 4:13] = 900   # in the files' own pixels: rows 5..10, columns 4..12 of the 4th file
    hu[1, 15:19, 20:26] = 900
    write_series(tmp_path / "series", hu, orientation)
    volume = read_scan(tmp_path / "series")
    peaks = [z for z in range(volume.shape[0]) if (volume.hu[z] > 500).any()]
    tracklets = [[(z, np.array([*_bright_box(volume.hu[z]), 0.9 - 0.2 * i]))] for i, z in enumerate(peaks)]
    lesions = lesions_from_tracklets(tracklets, volume, name="ct")
    write_volume_outputs("ct", volume, lesions, tmp_path / "out", overlays=False)
    write_dicom_sr("ct", volume, lesions, tmp_path / "series", tmp_path / "out" / f"ct{SR_SUFFIX}")

    files = {str(ds.SOPInstanceUID): ds for ds in
             (pydicom.dcmread(p) for p in sorted((tmp_path / "series").iterdir()))}
    pairs = _read_back(tmp_path / "out" / f"ct{SR_SUFFIX}", tmp_path / "out" / "ct.lesions.json")
    assert len(pairs) == 2
    flipped = orientation.startswith("-1")
    for lesion, group in pairs:
        # the score, unchanged
        (measurement,) = group.get_measurements()
        assert measurement.name.value == "111012"
        assert measurement.value == pytest.approx(lesion["score"], abs=1e-6)
        # the referenced file holds the peak slice: its position is the volume's slice position
        ds = files[_referenced_uid(group)]
        z = lesion["peak_slice"]
        expected_position = np.asarray(volume.to_physical(np.array([[0, 0, z]]))[0])
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(expected_position[2])
        # the polyline is the JSON box in the file's pixels (columns mirrored when the file is)
        x1, y1, x2, y2 = next(b[1:5] for b in lesion["boxes"] if b[0] == z)
        width = int(ds.Columns)
        box = [width - x2, y1, width - x1, y2] if flipped else [x1, y1, x2, y2]
        points = group.roi.value
        assert np.allclose(points, box_polyline(box), atol=1e-4)
        # ... and it encloses exactly the bright pixels of that file
        assert _bright_box(ds.pixel_array) == box


def test_sr_on_pydicoms_real_ct_small(tmp_path):
    from pydicom.data import get_testdata_file

    source = tmp_path / "ct_small"
    source.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), source / "CT_small.dcm")
    volume = read_scan(source)
    tracklets = [[(0, np.array([40.0, 50.5, 61.25, 70.0, 0.875]))]]
    lesions = lesions_from_tracklets(tracklets, volume, name="small")
    write_volume_outputs("small", volume, lesions, tmp_path / "out", overlays=False)
    write_dicom_sr("small", volume, lesions, source, tmp_path / "out" / "small.sr.dcm")
    original = pydicom.dcmread(source / "CT_small.dcm")
    out = tmp_path / "out"
    ((lesion, group),) = _read_back(out / "small.sr.dcm", out / "small.lesions.json")
    assert _referenced_uid(group) == str(original.SOPInstanceUID)
    assert np.allclose(group.roi.value, box_polyline(lesion["boxes"][0][1:5]), atol=1e-4)
    assert group.get_measurements()[0].value == pytest.approx(0.875)
    sr = pydicom.dcmread(tmp_path / "out" / "small.sr.dcm")
    assert sr.PatientID == original.PatientID and sr.StudyInstanceUID == original.StudyInstanceUID


def test_dicom_sr_refuses_non_dicom_input_before_predicting(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((3, 8, 8), np.int16))
    sitk.WriteImage(image, str(tmp_path / "scan.nii.gz"))
    with pytest.raises(ValueError, match=r"scan\.nii\.gz: --dicom-sr needs DICOM input"):
        predict_scans(None, load_config(), scan_sources([tmp_path / "scan.nii.gz"]), tmp_path / "out",
                      dicom_sr=True, progress=False)
    assert not (tmp_path / "out").exists()
