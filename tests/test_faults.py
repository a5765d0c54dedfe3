"""Fault injection: bad inputs, interrupts, kills, a full disk, a read-only output, NaNs.

Every test asserts the exit code, that the command printed exactly one line (``uld: ...``,
naming the file, row or value), and that every file that existed before the command is
byte-identical afterwards (:func:`snapshot`). Tiny data and a few training steps keep the
module fast; the tests that need a tmpfs mount (full disk, read-only output) skip with their
reason printed when the mount is not allowed.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import uld.train.loop as loop
from uld.cli import main
from uld.config import load_config
from uld.data.synth import SynthConfig, write_synthetic_dataset
from uld.train.checkpoint import atomic_save, load_checkpoint
from uld.train.loop import train

TINY = [
    "model.small_channels=[8, 16]", "model.out_channels=16", "model.representation_size=32",
    "model.rpn_pre_nms_top_n_train=100", "model.rpn_post_nms_top_n_train=50",
    "model.rpn_pre_nms_top_n_test=50", "model.rpn_post_nms_top_n_test=20",
    "model.rpn_batch_size_per_image=32", "model.box_batch_size_per_image=32",
    "train.batch_size=2", "train.warmup_iterations=2", "train.log_every=1",
    "mining.policy=none", "train.eval_every=1000",
]


def sets(*values: str) -> list[str]:
    return [a for v in (*TINY, *values) for a in ("--set", v)]


def snapshot(*folders: Path) -> dict[str, bytes]:
    """Every file under ``folders`` (path -> bytes)."""
    return {str(p): p.read_bytes() for f in folders if f.exists() for p in sorted(f.rglob("*"))
            if p.is_file()}


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("uld: "), lines[0]
    assert "Traceback" not in err and "np.float64" not in err
    return lines[0]


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults") / "data"
    write_synthetic_dataset(root, SynthConfig(n_train=3, n_val=1, n_test=2, n_negatives=1, size=48, seed=2,
                                              depth=(12, 16)), progress=False)
    return root


@pytest.fixture(scope="module")
def run(data) -> Path:
    out = data.parent / "run"
    train(load_config("demo", [*TINY, f"data.root={data}", "train.iterations=2"]), out, progress=False)
    return out


@pytest.fixture(scope="module")
def earlier(data, run) -> Path:
    """An earlier prediction folder that every failing predict must leave as it was."""
    out = data.parent / "earlier"
    assert main(["predict", "--model", str(run), "--data", str(data), "--split", "test",
                 "--out", str(out), "--quiet", "--no-overlays"]) == 0
    assert (out / "detections.json").is_file()
    return out


def good_scan(data: Path) -> Path:
    return data / "volumes" / "synth_00004.nii.gz"


# ------------------------------------------------------------------------------ damaged scans


def _raw(data: Path) -> bytes:
    return gzip.decompress(good_scan(data).read_bytes())


def _damage(kind: str, data: Path, path: Path) -> None:
    packed = good_scan(data).read_bytes()
    raw = bytearray(_raw(data))
    if kind == "truncated_half":
        path.write_bytes(packed[: len(packed) // 2])
    elif kind == "corrupt_byte":
        damaged = bytearray(packed)
        damaged[len(damaged) // 2] ^= 0xFF
        path.write_bytes(bytes(damaged))
    elif kind in ("zero_spacing", "nan_spacing", "negative_spacing", "inf_spacing"):
        value = {"zero_spacing": 0.0, "nan_spacing": float("nan"), "negative_spacing": -1.5,
                 "inf_spacing": float("inf")}[kind]
        raw[84:88] = struct.pack("<f", value)  # pixdim[2]: the row spacing
        path.write_bytes(gzip.compress(bytes(raw)))
    elif kind == "voxels_missing":  # a complete gzip stream of a short file
        path.write_bytes(gzip.compress(bytes(raw[: len(raw) - 500])))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(os.urandom(3000))
    elif kind == "header_only":
        path.write_bytes(gzip.compress(bytes(raw[:352])))


SCAN_FAULTS = ["truncated_half", "corrupt_byte", "zero_spacing", "nan_spacing", "negative_spacing",
               "inf_spacing", "voxels_missing", "empty", "garbage", "header_only"]


@pytest.mark.parametrize("kind", SCAN_FAULTS)
def test_damaged_scan_is_one_line_and_keeps_the_earlier_prediction(kind, data, run, earlier,
                                                                   tmp_path, capsys):
    bad = tmp_path / f"{kind}.nii.gz"
    _damage(kind, data, bad)
    before = snapshot(earlier)
    # the good scan first: its outputs are computed, and must not replace the earlier ones
    code, err = run_cli(capsys, "predict", str(good_scan(data)), str(bad), "--model", str(run),
                        "--out", str(earlier), "--quiet", "--no-overlays")
    assert code == 2
    line = one_line(err)
    assert str(bad) in line
    if "spacing" in kind:
        assert "spacing" in line
    assert snapshot(earlier) == before
    assert not any(p.name.endswith(".partial") for p in earlier.parent.iterdir())


@pytest.mark.parametrize("kind", ["truncated_half", "zero_spacing", "voxels_missing"])
def test_damaged_dataset_volume_stops_training_with_one_line(kind, data, tmp_path, capsys):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    _damage(kind, data, copy / "volumes" / "synth_00000.nii.gz")
    before = snapshot(copy)
    code, err = run_cli(capsys, "train", "--config", "demo", "--data", str(copy), "--out",
                        str(tmp_path / "r"), "--quiet", *sets("train.iterations=2"))
    assert code == 2
    assert "synth_00000.nii.gz" in one_line(err)
    assert snapshot(copy) == before


def test_damaged_dicom_series_names_the_file(tmp_path, capsys, run):
    pydicom = pytest.importorskip("pydicom", reason="pydicom is needed to write DICOM files")
    sys.path.insert(0, str(Path(__file__).parent / "data"))
    from test_scan import write_dicom_series

    hu = np.full((4, 24, 24), -100, dtype=np.int16)
    outcomes = []
    for kind in ("truncated_file", "zero_pixel_spacing", "duplicate_position"):
        series = tmp_path / kind
        write_dicom_series(series, hu)
        files = sorted(series.iterdir())
        if kind == "truncated_file":
            files[1].write_bytes(files[1].read_bytes()[:-300])
        elif kind == "zero_pixel_spacing":
            ds = pydicom.dcmread(files[2])
            ds.PixelSpacing = [0, 0.7]
            ds.save_as(files[2])
        else:
            ds = pydicom.dcmread(files[1])
            ds.ImagePositionPatient = pydicom.dcmread(files[2]).ImagePositionPatient
            ds.save_as(files[1])
        code, err = run_cli(capsys, "predict", str(series), "--model", str(run), "--out",
                            str(tmp_path / "p"), "--quiet")
        outcomes.append((kind, code, one_line(err)))
    for kind, code, line in outcomes:
        assert code == 2 and str(tmp_path / kind) in line, (kind, line)
    assert not (tmp_path / "p").exists()


# ------------------------------------------------------------------------------ model files


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {Path(os.environ.get('ULD_EVIL', '/tmp/uld-evil-ran'))}",))


def _bad_model(kind: str, run: Path, path: Path) -> None:
    good = (run / "model.pt").read_bytes()
    if kind == "garbage":
        path.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "malicious_pickle":
        torch.save({"model": _Evil(), "config": {}}, path)
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps({"model": [1, 2], "config": {}}))
    elif kind == "wrong_weights":
        state = torch.load(run / "model.pt", weights_only=True)
        state["model"] = {k: v[..., :1] if v.dim() else v for k, v in state["model"].items()}
        torch.save(state, path)
    elif kind == "nan_weights":
        state = torch.load(run / "model.pt", weights_only=True)
        first = next(k for k, v in state["model"].items() if v.is_floating_point())
        state["model"][first] = torch.full_like(state["model"][first], float("nan"))
        torch.save(state, path)
    elif kind == "bad_config":
        state = torch.load(run / "model.pt", weights_only=True)
        state["config"]["train"]["batch_size"] = 0
        torch.save(state, path)


MODEL_FAULTS = ["garbage", "truncated", "empty", "malicious_pickle", "plain_pickle", "wrong_weights",
                "nan_weights", "bad_config"]


@pytest.mark.parametrize("kind", MODEL_FAULTS)
def test_unreadable_model_is_one_line_in_predict_and_mine_negatives(kind, data, run, earlier,
                                                                    tmp_path, capsys, monkeypatch):
    evil = tmp_path / "evil-ran"
    monkeypatch.setenv("ULD_EVIL", str(evil))
    model = tmp_path / "model.pt"
    _bad_model(kind, run, model)
    before = snapshot(earlier, data)
    code, err = run_cli(capsys, "predict", str(good_scan(data)), "--model", str(model), "--out",
                        str(earlier), "--quiet")
    assert code == 2 and str(model) in one_line(err)
    code, err = run_cli(capsys, "mine-negatives", "--model", str(model), "--data", str(data),
                        "--out", str(earlier), "--quiet")
    assert code == 2 and str(model) in one_line(err)
    assert snapshot(earlier, data) == before
    assert not evil.exists(), "the malicious pickle ran code"


@pytest.mark.parametrize("kind", ["truncated", "garbage", "malicious_pickle", "empty"])
def test_damaged_checkpoint_refuses_to_resume_with_one_line(kind, data, run, tmp_path, capsys):
    folder = tmp_path / "r"
    shutil.copytree(run, folder)
    _bad_model(kind, run, folder / "last.pt")
    before = snapshot(folder)
    code, err = run_cli(capsys, "train", "--config", "demo", "--data", str(data), "--out", str(folder),
                        "--resume", "--quiet", *sets("train.iterations=3"))
    assert code == 2 and str(folder / "last.pt") in one_line(err)
    assert snapshot(folder) == before


def test_bad_detection_files_are_one_line_in_evaluate(data, tmp_path, capsys):
    cases = {
        "malicious.pkl": pickle.dumps(_Evil()),
        "truncated.pkl": pickle.dumps({"a": [1, 2, 3]})[:-4],
        "deep.json": b"{\"volumes\": " + b"[" * 200_000 + b"]" * 200_000 + b"}",
        "latin1.json": "{\"volumes\": {\"caf\xe9\": []}}".encode("latin-1"),
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        code, err = run_cli(capsys, "evaluate", "--gt", str(data), "--split", "test",
                            "--detections", str(path))
        assert code == 2 and str(path) in one_line(err), name


# ------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(("setting", "named"), [
    ("train.iterations=-5", "train.iterations = -5"),
    ("train.batch_size=0", "train.batch_size = 0"),
    ("train.lr=.nan", "train.lr = nan"),
    ("train.lr=-0.1", "train.lr = -0.1"),
    ("train.lr=.inf", "train.lr = inf"),
    ("train.checkpoint_every=0", "train.checkpoint_every = 0"),
    ("infer.batch_size=0", "infer.batch_size = 0"),
    ("data.window_hu=[1,", "data.window_hu=[1,"),
    ("data.window_hu=[600, -400]", "data.window_hu = [600, -400]"),
    ("data.num_slices=4", "data.num_slices = 4"),
])
def test_bad_settings_stop_before_anything_is_written(setting, named, data, tmp_path, capsys):
    before = snapshot(data)
    code, err = run_cli(capsys, "train", "--config", "demo", "--data", str(data), "--out",
                        str(tmp_path / "r"), "--quiet", *sets(setting))
    assert code == 2 and named in one_line(err)
    assert not (tmp_path / "r").exists() and snapshot(data) == before


def test_exponent_numbers_parse_as_numbers():
    config = load_config("demo", ["train.lr=1e-3", "train.iterations=1e3", "data.max_size=5E2"])
    assert (config.train.lr, config.train.iterations, config.data.max_size) == (0.001, 1000, 500)


def test_synth_settings_and_existing_outputs(data, tmp_path, capsys):
    before = snapshot(data)
    for argv, named in [
        (["--lesion-contrast", "inf"], "lesion_contrast = inf"),
        (["--lesion-contrast", "nan"], "lesion_contrast = nan"),
        (["--train", "-3"], "n_train = -3"),
        ([], "not empty"),  # over another dataset, without --overwrite
    ]:
        code, err = run_cli(capsys, "synth", "--out", str(data), "--quiet", "--train", "1",
                            "--val", "0", "--test", "0", "--size", "48", *argv)
        assert code == 2 and named in one_line(err), (argv, err)
    assert snapshot(data) == before
    afile = tmp_path / "a_file"
    afile.write_text("mine")
    code, err = run_cli(capsys, "synth", "--out", str(afile), "--quiet")
    assert code == 2 and "names a file, not a folder" in one_line(err) and str(afile) in err
    assert afile.read_text() == "mine"


def test_convert_with_a_missing_root_leaves_the_existing_dataset(data, tmp_path, capsys):
    before = snapshot(data)
    code, err = run_cli(capsys, "convert", "deeplesion", "--root", str(tmp_path / "missing"),
                        "--out", str(data), "--quiet")
    assert code == 2 and str(tmp_path / "missing") in one_line(err)
    code, err = run_cli(capsys, "convert", "deeplesion", "--root", str(tmp_path), "--out", str(data),
                        "--quiet")
    assert code == 2 and "--overwrite" in one_line(err)
    assert snapshot(data) == before


def test_unfinished_and_non_utf8_datasets_are_refused(data, tmp_path, capsys):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (copy / ".uld-unfinished").write_text("")
    code, err = run_cli(capsys, "train", "--config", "demo", "--data", str(copy), "--out",
                        str(tmp_path / "r"), "--quiet", *sets("train.iterations=1"))
    assert code == 2 and "unfinished dataset" in one_line(err)
    (copy / ".uld-unfinished").unlink()
    splits = copy / "splits.csv"
    splits.write_bytes(splits.read_bytes() + "caf\xe9,train\n".encode("latin-1"))
    code, err = run_cli(capsys, "train", "--config", "demo", "--data", str(copy), "--out",
                        str(tmp_path / "r"), "--quiet", *sets("train.iterations=1"))
    assert code == 2 and f"{copy / 'splits.csv'}: not UTF-8" in one_line(err)


# ------------------------------------------------------------------------------ NaN


def test_nan_loss_stops_naming_step_and_losses_and_keeps_the_last_finite_checkpoint(
        data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    real = loop.student_batch
    seen = {"calls": 0, "kept": None}

    def poisoned(batch, mined, ratio, config, device="cpu", **kwargs):
        seen["calls"] += 1
        images, targets = real(batch, mined, ratio, config, device, **kwargs)
        if seen["calls"] == 4:  # step 3 (0-based): after the checkpoint of step 2
            seen["kept"] = (out / "last.pt").read_bytes()
            images = [image * float("nan") for image in images]
        return images, targets

    monkeypatch.setattr(loop, "student_batch", poisoned)
    code, err = run_cli(capsys, "train", "--config", "demo", "--data", str(data), "--out", str(out),
                        "--quiet", *sets("train.iterations=6", "train.checkpoint_every=2"))
    line = one_line(err)
    assert code == 2
    assert "step 3: the loss is not finite" in line and "loss_classifier = nan" in line
    assert f"{out / 'last.pt'} (step 2), is kept" in line
    assert (out / "last.pt").read_bytes() == seen["kept"]
    assert load_checkpoint(out / "last.pt")["step"] == 2 and not (out / "model.pt").exists()


def test_non_finite_weights_are_never_saved(tmp_path):
    from uld.train.guard import NonFiniteError, check_finite_weights

    good = {"w": torch.ones(3)}
    check_finite_weights(5, [("student", good)], tmp_path / "last.pt", None)
    with pytest.raises(NonFiniteError, match=r"^step 5: teacher weight b is not finite"):
        check_finite_weights(5, [("student", good), ("teacher", {"b": torch.tensor([1.0, float("inf")])})],
                             tmp_path / "last.pt", None)


# ------------------------------------------------------------------------------ disk


@pytest.fixture
def small_tmpfs(tmp_path) -> Iterator[Path]:
    """A 3 MiB tmpfs (root only); skipped, with the reason printed, where mounting fails."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        reason = (f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): "
                  "disk-full and read-only tests skipped")
        print(reason)
        pytest.skip(reason)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system of ``folder`` until about ``leave`` bytes are free."""
    free = shutil.disk_usage(folder).free
    with (folder / "filler").open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave))


def test_full_disk_is_one_line_and_damages_nothing(small_tmpfs, data, run, capsys):
    # a checkpoint written through atomic_save: the previous one stays whole
    atomic_save({"x": torch.zeros(10)}, small_tmpfs / "last.pt")
    out = small_tmpfs / "pred"
    out.mkdir()
    (out / "detections.json").write_text('{"format": "uld-detections", "version": 1, "volumes": {}}')
    before = snapshot(small_tmpfs)
    _fill(small_tmpfs, 4096)
    with pytest.raises(OSError, match=rf"^no space left on device, {small_tmpfs / 'last.pt'}$"):
        atomic_save({"x": torch.zeros(200_000)}, small_tmpfs / "last.pt")
    code, err = run_cli(capsys, "predict", str(good_scan(data)), "--model", str(run), "--out", str(out),
                        "--quiet")
    assert code == 2 and one_line(err).startswith("uld: error: no space left on device, ")
    (small_tmpfs / "filler").unlink()
    assert snapshot(small_tmpfs) == before
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["last.pt", "pred"]


def test_read_only_output_is_one_line(small_tmpfs, data, run, capsys):
    out = small_tmpfs / "pred"
    out.mkdir()
    (out / "detections.json").write_text("{}")
    before = snapshot(small_tmpfs)
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    code, err = run_cli(capsys, "predict", str(good_scan(data)), "--model", str(run), "--out", str(out),
                        "--quiet")
    assert code == 2 and one_line(err).startswith("uld: error: read-only file system, ")
    code, err = run_cli(capsys, "synth", "--out", str(small_tmpfs / "d"), "--quiet", "--train", "1")
    assert code == 2 and one_line(err).startswith("uld: error: read-only file system, ")
    assert snapshot(small_tmpfs) == before


# ------------------------------------------------------------------------------ signals


def _interactive_sigint() -> None:
    """In the child before exec: SIGINT as a terminal's Ctrl-C delivers it. A job a
    non-interactive shell starts in the background (``cmd &``, as CI may run the suite)
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _uld(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "uld.cli", *argv], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=_interactive_sigint)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, f"the process ended before the signal: {process.stderr.read()}"


def _metrics_lines(out: Path) -> int:
    path = out / "metrics.jsonl"
    return path.read_text().count("\n") if path.is_file() else 0


def test_sigint_during_training_saves_and_says_how_to_resume(data, tmp_path):
    out = tmp_path / "r"
    argv = ["train", "--config", "demo", "--data", str(data), "--out", str(out), "--quiet",
            *sets("train.iterations=500", "train.checkpoint_every=1000")]
    process = _uld(*argv)
    _wait_for(lambda: _metrics_lines(out) >= 2, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    line = one_line(err)
    step = load_checkpoint(out / "last.pt")["step"]
    assert line.startswith(f"uld: interrupted at step {step}; resume with: uld train ")
    assert line.endswith(" --resume") and not (out / "model.pt").exists()
    # the printed command resumes (with a shorter run, so the test stays short)
    again = shlex.split(line.split("resume with: uld ", 1)[1])
    again[again.index("train.iterations=500")] = f"train.iterations={step + 1}"
    done = subprocess.run([sys.executable, "-m", "uld.cli", *again], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(out / "last.pt")["step"] == step + 1


def test_sigint_and_sigkill_during_predict_keep_the_earlier_prediction(data, run, earlier, tmp_path):
    scans = []
    for i in range(40):
        scans.append(tmp_path / f"s{i:02d}.nii.gz")
        shutil.copyfile(good_scan(data), scans[-1])
    before = snapshot(earlier)
    partial = earlier.parent / f".{earlier.name}.partial"
    for sig, code in ((signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)):
        process = _uld("predict", *map(str, scans), "--model", str(run), "--out", str(earlier),
                       "--quiet", "--no-overlays")
        _wait_for(lambda: partial.is_dir() and any(partial.glob("*.lesions.json")), process)
        process.send_signal(sig)
        _, err = process.communicate(timeout=120)
        assert process.returncode == code, err
        if sig == signal.SIGINT:
            assert one_line(err) == "uld: interrupted"
            assert not partial.exists()
        assert snapshot(earlier) == before
    shutil.rmtree(partial)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns


def test_sigint_and_sigkill_during_synth_keep_the_earlier_dataset(data, tmp_path):
    target = tmp_path / "d"
    shutil.copytree(data, target)
    before = snapshot(target)
    partial = tmp_path / ".d.partial"
    for sig, code in ((signal.SIGKILL, -signal.SIGKILL), (signal.SIGINT, 130)):
        marker = partial / ".uld-unfinished"
        left = _stamp(marker)  # what the killed run left
        process = _uld("synth", "--out", str(target), "--overwrite", "--quiet", "--train", "60",
                       "--size", "48")
        _wait_for(lambda m=marker, old=left: _stamp(m) not in (None, old)
                  and any((partial / "volumes").glob("*.nii.gz")), process)
        process.send_signal(sig)
        _, err = process.communicate(timeout=120)
        assert process.returncode == code, err
        if sig == signal.SIGINT:
            assert one_line(err) == "uld: interrupted"
        assert snapshot(target) == before
        assert (target / "dataset.json").is_file()
    assert not partial.exists(), "the interrupted run removes its own (and the killed run's) partial folder"
