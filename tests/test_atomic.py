import os

import pytest

from uld.atomic import atomic_path, write_bytes, write_text


def test_write_replaces_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "a" / "b.bin"
    write_bytes(path, b"one")
    write_text(path, "two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["b.bin"]
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.pt"
    write_bytes(path, b"good")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed while writing")
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_suffix_is_kept_for_writers_that_need_it(tmp_path):
    with atomic_path(tmp_path / "x.nii.gz", suffix=".nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"")
