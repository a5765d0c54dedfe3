import numpy as np
import pytest

from uld.data.dataset import DataError, DatasetFolder, read_annotations, read_splits, write_csv
from uld.data.volume import Volume, read_volume, write_volume


def _write(path, text):
    path.write_text(text)
    return path


def test_annotations_read_with_key_and_extra_columns(tmp_path):
    p = _write(tmp_path / "a.csv", "volume,z,x1,y1,x2,y2,key,lesion\nv1,3,1,2,5,6,1,a\nv1,4,1,2,5,6,0,a\n")
    t = read_annotations(p)
    assert t.z.tolist() == [3, 4] and t.key.tolist() == [True, False]
    assert t.extra["lesion"].tolist() == ["a", "a"]
    assert t.key_slices() == [("v1", 3)]
    assert list(t.by_slice()) == [("v1", 3), ("v1", 4)]


def test_a_slice_whose_rows_all_say_background_0_is_foreground_only(tmp_path):
    p = _write(tmp_path / "a.csv", "volume,z,x1,y1,x2,y2,key,background\n"
               "v1,3,1,2,5,6,1,0\nv1,3,7,2,9,6,0,1\nv1,5,1,2,5,6,1,0\nv1,5,7,2,9,6,0,0\n")
    t = read_annotations(p)
    assert t.foreground_only_slices() == {("v1", 5)}  # slice 3 has a row saying 1
    assert read_annotations(_write(tmp_path / "b.csv", "volume,z,x1,y1,x2,y2\nv1,3,1,2,5,6\n")
                            ).foreground_only_slices() == set()
    with pytest.raises(DataError, match=r"b.csv, row 2: background = 'yes' is not 0 or 1"):
        read_annotations(_write(tmp_path / "b.csv", "volume,z,x1,y1,x2,y2,background\n"
                                "v1,3,1,2,5,6,yes\n"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("v1,3,5,2,1,6", r"row 2: box .* x1 < x2"),
        ("v1,3,1,2,x,6", r"row 2: column x2 = 'x' is not a number"),
        ("v1,-1,1,2,5,6", r"row 2: z = '-1'"),
        ("v1,3,1,2,5,nan", r"row 2: column y2 = 'nan' is not finite"),
        ("v1,3,1,2,5", r"row 2: expected 6 fields"),
        ("../etc,3,1,2,5,6", r"row 2: volume name '../etc'"),
    ],
)
def test_bad_rows_are_named(tmp_path, body, message):
    p = _write(tmp_path / "a.csv", "volume,z,x1,y1,x2,y2\n" + body + "\n")
    with pytest.raises(DataError, match=message):
        read_annotations(p)


def test_missing_column_is_named(tmp_path):
    p = _write(tmp_path / "a.csv", "volume,z,x1,y1,x2\nv,1,1,1,2\n")
    with pytest.raises(DataError, match="missing column"):
        read_annotations(p)


def test_splits_validated(tmp_path):
    with pytest.raises(DataError, match="row 3: split 'dev'"):
        read_splits(_write(tmp_path / "s.csv", "volume,split\na,train\nb,dev\n"))
    with pytest.raises(DataError, match="listed twice"):
        read_splits(_write(tmp_path / "s.csv", "volume,split\na,train\na,val\n"))


def test_volume_round_trip_keeps_hu_and_geometry(tmp_path):
    hu = (np.arange(4 * 5 * 6).reshape(4, 5, 6) - 1000).astype(np.int16)
    v = Volume(hu, (0.7, 0.8, 2.5), (1.0, 2.0, 3.0))
    write_volume(v, tmp_path / "v.nii.gz")
    back = read_volume(tmp_path / "v.nii.gz")
    assert np.array_equal(back.hu, hu)
    assert np.allclose(back.spacing_xyz, (0.7, 0.8, 2.5))
    assert np.allclose(back.origin_xyz, (1.0, 2.0, 3.0))
    assert not list(tmp_path.glob(".tmp-*"))


def test_unreadable_volume_names_the_file(tmp_path):
    _write(tmp_path / "bad.nii.gz", "not an image")
    with pytest.raises(ValueError, match="bad.nii.gz"):
        read_volume(tmp_path / "bad.nii.gz")


def test_nan_spacing_refused():
    with pytest.raises(ValueError, match="spacing"):
        Volume(np.zeros((1, 2, 2)), (1.0, float("nan"), 1.0))


def test_folder_checks_annotation_volumes_against_splits(tmp_path):
    write_csv(tmp_path / "splits.csv", ["volume", "split"], [["a", "train"]])
    write_csv(tmp_path / "annotations.csv", ["volume", "z", "x1", "y1", "x2", "y2"],
              [["b", 0, 1.0, 1.0, 2.0, 2.0]])
    folder = DatasetFolder(tmp_path)
    assert folder.volumes("train") == ["a"]
    with pytest.raises(DataError, match="row 2: volume 'b' is not in splits.csv"):
        folder.annotations()
    with pytest.raises(DataError, match="volume file not found"):
        folder.read_volume("a")
