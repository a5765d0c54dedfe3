"""uld.safe_pickle: plain pickles load, code-running pickles are refused without running."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from uld.safe_pickle import (
    PickleReadError,
    UnsafePickleError,
    dump_pickle,
    load_pickle,
)

REAL = Path(__file__).resolve().parents[2] / "shared" / "deeplesion"  # ../shared beside the repo


class _RunsCode:
    """Unpickling this calls os.system(command)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _plain_object() -> dict:
    return {
        "list": [1, 2.5, "three", None, True],
        "tuple": (1, (2, 3)),
        "set": {1, 2},
        "frozenset": frozenset({4}),
        "complex": 1 + 2j,
        "bytes": b"\x00\xff",
        "empty_bytes": b"",
        "bytearray": bytearray(b"ab"),
        "ordered": collections.OrderedDict(a=1),
        "array": np.arange(12, dtype=np.float32).reshape(3, 4),
        "strided": np.arange(10.0)[::3],
        "int_array": np.array([[1, 2]], dtype=np.int64),
        "scalar64": np.float64(1.25),
        "scalar32": np.float32(0.5),
        "int_scalar": np.int64(7),
        "empty": np.zeros((0, 6)),
    }


def _assert_same(a: object, b: object) -> None:
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray)
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert type(a) is type(b) and a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert type(a) is type(b) and a == b


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_objects_round_trip_at_every_protocol(tmp_path: Path, protocol: int) -> None:
    obj = _plain_object()
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    _assert_same(obj, load_pickle(path))


def test_dump_pickle_round_trip(tmp_path: Path) -> None:
    obj = _plain_object()
    path = dump_pickle(obj, tmp_path / "sub" / "out.pkl")
    assert path == tmp_path / "sub" / "out.pkl"
    _assert_same(obj, load_pickle(path))
    assert [p.name for p in path.parent.iterdir()] == ["out.pkl"]  # no temporary left


def test_old_numpy_module_names_are_admitted(tmp_path: Path) -> None:
    # Pickles written by numpy < 2 name numpy.core.multiarray (the real Lesion Harvester
    # files do); numpy >= 2 writes numpy._core.multiarray. Rewrite one into the other.
    data = pickle.dumps({"a": np.arange(3.0), "s": np.float64(2.0)}, protocol=2)
    assert b"numpy._core.multiarray" in data
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path = tmp_path / "old.pkl"
    path.write_bytes(old)
    out = load_pickle(path)
    np.testing.assert_array_equal(out["a"], np.arange(3.0))
    assert out["s"] == 2.0 and isinstance(out["s"], np.float64)


def test_real_lesion_harvester_file_loads() -> None:
    out = load_pickle(REAL / "lesion_harvester" / "Revised-Train100.pkl")
    assert isinstance(out, dict) and len(out) == 100
    first = next(iter(out.values()))
    z, rows = next(iter(first.items()))
    assert isinstance(z, int) and len(rows[0]) == 6 and isinstance(rows[0][0], np.float64)


def test_real_manual_1k_file_loads() -> None:
    out = load_pickle(REAL / "manual_1k" / "DeepLesion_manual_1K_test_release.pkl")
    assert len(out["val"]) == 200 and len(out["test"]) == 800
    assert all(isinstance(a, np.ndarray) and a.shape[1:] == (6,) for a in out["test"].values())


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_code_running_pickle_is_refused_without_running(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": _RunsCode(f"touch {marker}")}, protocol=protocol))
    with pytest.raises(UnsafePickleError) as info:
        load_pickle(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert f"{os.system.__module__}.system" in message  # posix.system on Linux
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\neval\n(S'1+1'\ntR.",
        b"cbuiltins\ngetattr\n(cbuiltins\nobject\nS'__subclasses__'\ntR.",
        b"csubprocess\ncheck_output\n((S'true'\nltR.",
        b"c__builtin__\nexec\n(S'x=1'\ntR.",
        b"cnumpy\nload\n(S'x'\ntR.",
        b"c_codecs\nencode\n(S'abc'\nS'rot13'\ntR.",
    ],
)
def test_other_globals_are_refused(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "bad.pkl"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match="refused global"):
        load_pickle(path)


def test_persistent_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pid.pkl"
    path.write_bytes(b"(lp0\nPsomething\na.")
    with pytest.raises(UnsafePickleError, match="persistent id"):
        load_pickle(path)


def test_broken_and_missing_files_name_the_file(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps(list(range(100)), protocol=4)[:-5])
    with pytest.raises(PickleReadError, match="truncated.pkl: not a readable pickle"):
        load_pickle(truncated)
    text = tmp_path / "text.pkl"
    text.write_text("hello world")
    with pytest.raises(PickleReadError, match="text.pkl"):
        load_pickle(text)
    with pytest.raises(PickleReadError, match="missing.pkl: cannot open"):
        load_pickle(tmp_path / "missing.pkl")
    assert issubclass(PickleReadError, ValueError) and issubclass(UnsafePickleError, ValueError)


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "keep.pkl"
    dump_pickle([1, 2, 3], path)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        dump_pickle({"f": lambda: None}, path)
    assert load_pickle(path) == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.pkl"]
