"""The demo's plumbing (dataset, three runs, table, FROC plot, gallery, report) at toy size."""

from uld.data.synth import SynthConfig
from uld.demo import RUNS, run_demo

TINY = (
    "model.small_channels=[8, 16]", "model.out_channels=16", "model.representation_size=32",
    "model.rpn_batch_size_per_image=32", "model.box_batch_size_per_image=32",
    "train.iterations=4", "train.eval_every=2", "train.checkpoint_every=2",
    "train.warmup_iterations=1", "mining.start_iteration=2", "mining.tau=0.01",
)


def test_demo_writes_a_report_and_reuses_finished_runs(tmp_path, capsys):
    settings = (SynthConfig(n_train=4, n_val=2, n_test=2, size=64, seed=3), TINY)
    report = run_demo(tmp_path, progress=False, settings=settings, workers=1)
    text = report.read_text(encoding="utf-8")
    for run in RUNS:
        assert run.label in text
        assert (tmp_path / run.name / "model.pt").is_file()
    assert "| method | R | P+ | P- | seeds | 0.125 |" in text
    assert "oracle > mining > baseline" in text.splitlines()[0]  # shown, or said that it is not
    assert "One seed (0)" in text
    assert "[mining/review/index.html](mining/review/index.html)" in text
    assert (tmp_path / "mining" / "review" / "index.html").is_file()
    for picture in ("froc.png", "mined_lesions.png", "training.png"):
        assert (tmp_path / picture).stat().st_size > 1000
    assert "Oracle (complete labels)" in capsys.readouterr().out
    stamp = (tmp_path / "oracle" / "model.pt").stat().st_mtime_ns
    run_demo(tmp_path, progress=False, settings=settings, workers=1)
    assert (tmp_path / "oracle" / "model.pt").stat().st_mtime_ns == stamp


def test_workers_must_be_positive(capsys):
    from uld.cli import main

    assert main(["demo", "--workers", "0", "--out", "unused"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["uld: error: --workers 0: must be at least 1"]
