"""User scans: NIfTI files and DICOM series read as axial LPS volumes in HU."""

import numpy as np
import pytest
import SimpleITK as sitk

from uld.data.volume import read_scan

pydicom = pytest.importorskip("pydicom")


def write_dicom_series(folder, hu, spacing=(0.7, 0.7, 2.5), origin=(-100.0, -120.0, 30.0)):
    """One CT series, a file per slice (signed HU; the real CT_small.dcm test covers
    RescaleIntercept)."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.42"
    for z in range(hu.shape[0]):
        image = sitk.GetImageFromArray(hu[z].astype(np.int16))
        image.SetSpacing(spacing[:2])
        position = (origin[0], origin[1], origin[2] + z * spacing[2])
        for tag, value in {
            "0008|0060": "CT", "0020|000e": series_uid, "0020|000d": series_uid + ".0",
            "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0032": "\\".join(f"{v:g}" for v in position),
            "0020|0013": str(z + 1),
                        "0018|0050": f"{spacing[2]:g}", "0008|0018": f"{series_uid}.{z + 1}",
        }.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{hu.shape[0] - z:03d}.dcm"))  # names in reverse order
        writer.Execute(image)


def test_a_dicom_series_is_read_in_hu_sorted_by_position(tmp_path):
    hu = np.stack([np.full((16, 20), 100 * z - 1000, dtype=np.int16) for z in range(5)])
    hu[2, 3, 4] = 1500
    write_dicom_series(tmp_path / "series", hu)
    volume = read_scan(tmp_path / "series")
    assert volume.shape == (5, 16, 20)
    assert np.array_equal(volume.hu, hu)          # slope/intercept applied, sorted by z position
    assert np.allclose(volume.spacing_xyz, (0.7, 0.7, 2.5))
    assert np.allclose(volume.origin_xyz, (-100, -120, 30))
    assert np.allclose(volume.to_physical(np.array([[4, 3, 2]])), [[-100 + 2.8, -120 + 2.1, 35]])


def test_pydicom_real_ct_slice_reads_as_a_one_slice_volume_in_hu():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    volume = read_scan(path)
    assert volume.shape == (1, 128, 128)
    assert np.array_equal(volume.hu[0], expected)
    assert np.allclose(volume.spacing_xyz[:2], [float(s) for s in ds.PixelSpacing])
    assert np.allclose(volume.origin_xyz, [float(v) for v in ds.ImagePositionPatient])


def test_a_ras_nifti_is_reoriented_to_lps_without_moving_anything(tmp_path):
    hu = np.zeros((4, 6, 8), dtype=np.int16)
    hu[1, 2, 3] = 700
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((0.5, 0.6, 3.0))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # RAS storage, as nibabel writes it
    image.SetOrigin((10.0, 20.0, -5.0))
    sitk.WriteImage(image, str(tmp_path / "ras.nii.gz"))
    where = np.array(image.TransformIndexToPhysicalPoint((3, 2, 1)))

    volume = read_scan(tmp_path / "ras.nii.gz")
    assert np.allclose(np.reshape(volume.direction, (3, 3)), np.eye(3))
    z, y, x = np.argwhere(volume.hu == 700)[0]
    assert (z, y, x) == (1, 6 - 1 - 2, 8 - 1 - 3)     # x and y flipped
    assert np.allclose(volume.to_physical(np.array([[x, y, z]]))[0], where)


@pytest.mark.parametrize("make", ["missing", "empty_folder", "not_an_image", "two_series"])
def test_unreadable_scans_are_named(tmp_path, make):
    target = tmp_path / "scan"
    if make == "empty_folder":
        target.mkdir()
    elif make == "not_an_image":
        target = tmp_path / "scan.nii.gz"
        target.write_bytes(b"this is not a NIfTI file")
    elif make == "two_series":
        write_dicom_series(target, np.zeros((2, 8, 8), dtype=np.int16))
        other = tmp_path / "other"
        write_dicom_series(other, np.zeros((2, 8, 8), dtype=np.int16))
        for i, f in enumerate(sorted(other.iterdir())):  # same files, another series UID
            ds = pydicom.dcmread(f)
            ds.SeriesInstanceUID = "1.2.3.4"
            ds.SOPInstanceUID = f"1.2.3.4.{i}"
            ds.save_as(target / f"b{i}.dcm")
    error = FileNotFoundError if make == "missing" else ValueError
    with pytest.raises(error, match=str(target.name)):
        read_scan(target)
