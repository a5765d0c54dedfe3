"""The demo's plumbing (dataset, three runs, table, FROC plot, gallery, report) at toy size."""

import math

from uld.data.synth import SynthConfig
from uld.demo import EXPERIMENT_REPORT, RUNS, difference_lines, first_line, run_demo
from uld.experiment.runner import paired_volume_difference
from uld.experiment.stats import Interval

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
    assert "choice of the 2 test volumes" in text
    assert "- oracle - baseline: " in text and "- mining - baseline: " in text
    same = paired_volume_difference(tmp_path / "oracle", tmp_path / "oracle", tmp_path / "data")
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)  # paired: identical runs, no noise
    gap = paired_volume_difference(tmp_path / "oracle", tmp_path / "baseline", tmp_path / "data")
    assert gap.low <= gap.mean <= gap.high and f"oracle - baseline: {gap.text()}" in text
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


def test_first_line_claims_the_ordering_only_beyond_the_test_noise():
    def iv(mean, low, high):
        return Interval(mean, low, high, 300)

    assert first_line(iv(6.0, 3.0, 9.0), iv(3.0, 1.0, 5.0)).startswith("oracle > mining > baseline")
    for gap, change in [
        (iv(6.0, 3.0, 9.0), iv(1.0, -1.0, 3.0)),   # mining within the test noise
        (iv(6.0, 3.0, 9.0), iv(-2.0, -4.0, -0.5)),  # mining below the baseline
        (iv(2.0, 1.0, 3.0), iv(3.0, 2.0, 4.0)),    # mining above the oracle
        (iv(1.0, -1.0, 3.0), iv(0.5, 0.1, 0.9)),   # no measurable gap
        (None, None),                               # no detections to compare
    ]:
        line = first_line(gap, change)
        assert line.startswith("this run does not show") and EXPERIMENT_REPORT in line


def test_difference_lines_give_the_share_of_the_gap():
    lines = difference_lines(Interval(6.0, 3.0, 9.0, 300), Interval(-1.5, -3.0, 0.5, 300))
    assert lines[0] == "- oracle - baseline: +6.0 [+3.0, +9.0] AP points"
    assert lines[1] == "- mining - baseline: -1.5 [-3.0, +0.5] AP points; closes -25 % of the oracle's lead"
    no_gap = difference_lines(Interval(-1.0, -2.0, 0.0, 300), Interval(1.0, 0.0, 2.0, 300))
    assert "closes" not in no_gap[1]
    assert difference_lines(None, Interval(math.nan, math.nan, math.nan, 1)) == []
