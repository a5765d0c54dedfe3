"""``uld experiment paper`` in miniature: every run, the hard-negative step, the report, reuse."""

from __future__ import annotations

import json

import pytest

from uld.cli import main
from uld.config import load_config
from uld.data.synth import SynthConfig
from uld.experiment.plan import BUDGETS, SWEEP_ROWS, Budget, paper_runs, select_runs


def test_plan_has_the_papers_rows_with_one_budget():
    runs = paper_runs(BUDGETS["default"], base_tau=0.9)
    names = [r.name for r in runs]
    assert names[:4] == ["oracle_s0", "none_s0", "add_s0", "ignore_s0"]
    assert sum(r.group == "main" for r in runs) == 4 * 5  # five seeds of the main rows
    for seed in (0, 1):
        assert {f"tau0.95_s{seed}", f"tau0.85_s{seed}", f"tau0.80_s{seed}", f"decay_s{seed}",
                f"upper_add_s{seed}", f"upper_ignore_s{seed}", f"band_s{seed}", f"nb2_s{seed}",
                f"upper_nb2_s{seed}"} <= set(names)
        nb = next(r for r in runs if r.name == f"nb2_s{seed}")
        assert "data.unlabeled_neighbours=2" in nb.overrides and "mining.policy=add" in nb.overrides
        late = next(r for r in runs if r.name == f"nb2late_s{seed}")
        assert {"data.unlabeled_neighbours=2", "data.unlabeled_neighbours_from=2500"} <= set(late.overrides)
    assert {"add_pminus_s0", "none_random_s0", "add_random_s0", "oracle_aug_s1"} <= set(names)
    oracle_aug = next(r for r in runs if r.name == "oracle_aug_s1")
    assert {"data.annotations=annotations_full.csv", "train.hflip=0.5"} <= set(oracle_aug.overrides)
    assert "none_largest_s0" not in names  # the benchmark's own labels are largest-first
    sweep = [r for r in runs if r.group == "sweep"]
    assert len(sweep) == 4 * 3 * 2 + 3 * 3 + 2 * 2 + 2 * 3
    assert {r.unlabeled for r in sweep} == {0.3, 0.55, 0.7, 0.85}
    more = {r.name for r in sweep if r.seed > 1 or r.kind.split("_", 1)[1] not in SWEEP_ROWS}
    assert more == {*(f"sweep85_{kind}_s{seed}" for kind in ("none", "add", "upper_add")
                      for seed in (2, 3, 4)),
                    *(f"sweep85_{kind}_s{seed}" for kind in ("tau0.85", "band") for seed in (0, 1)),
                    *(f"sweep85_{kind}_s{seed}" for kind in ("none_aug", "add_aug") for seed in (0, 1, 2))}
    aug = next(r for r in sweep if r.name == "sweep85_add_aug_s1")
    assert {"mining.policy=add", "train.hflip=0.5", "train.resize_range=[0.6, 1.4]"} <= set(aug.overrides)
    band = next(r for r in sweep if r.name == "sweep85_band_s1")
    assert {"mining.ignore_low=0.5", "train.seed=1",
            "data.annotations=annotations_unlabeled85.csv"} <= set(band.overrides)
    assert "data.annotations=annotations_unlabeled55.csv" in sweep[6].overrides
    pminus = next(r for r in runs if r.hard_negatives_from)
    assert pminus.hard_negatives_from == "add_s0"
    # the runs differ only by their own overrides: nothing touches the budget
    for run in runs:
        assert not any(o.startswith(("train.iterations", "train.batch_size", "data.root"))
                       for o in run.overrides)
    assert len(names) == len(set(names))
    assert "tau0.90_s0" in [r.name for r in paper_runs(BUDGETS["small"], base_tau=0.8)]
    random = Budget("r", SynthConfig(missing="random"), (), (0,))
    assert "none_largest_s0" in {r.name for r in paper_runs(random, 0.9)}


def test_select_runs_by_name_and_group():
    runs = paper_runs(BUDGETS["default"], base_tau=0.9)
    assert all(r.group != "sweep" for r in select_runs(runs, ()))
    assert {r.group for r in select_runs(runs, ("sweep",))} == {"sweep"}
    assert [r.name for r in select_runs(runs, ("add_s3", "oracle_s0"))] == ["oracle_s0", "add_s3"]
    with pytest.raises(ValueError, match="--only 'swep': neither a run nor a group"):
        select_runs(runs, ("swep",))


def test_tiny_experiment_runs_everything_writes_the_report_and_skips_what_is_done(tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["experiment", "paper", "--budget", "tiny", "--out", str(out), "--quiet",
                 "--workers", "2", "--only", "main", "--only", "ablations", "--only", "sweep"]) == 0
    report = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("Table I", "Table II: tau", "Table III", "Table IV", "Every run",
                    "Which missing labels hurt", "perfect mining - baseline",
                    "Every comparison, paired over seeds", "Sparsity sweep", "test-split noise"):
        assert heading in report
    for picture in ("froc.png", "training.png", "sweep.png"):
        assert (out / picture).stat().st_size > 1000
    # each sparsity level's mining rows, paired with its baseline over the seeds
    assert "| 50 % unlabeled: what mining (add) recovers | sweep50_add - sweep50_none | 1 |" in report
    assert "| sweep50_upper_add - sweep50_none |" in report
    runs = paper_runs(BUDGETS["tiny"], load_config("demo", BUDGETS["tiny"].overrides).mining.tau)
    for run in runs:
        folder = out / "runs" / run.name
        result = json.loads((folder / "test_p3d.json").read_text())
        assert 0.0 <= result["ap"] <= 1.0 and len(result["fps"]) == len(result["sens"])
        assert f"| {run.name} |" in report
    pminus = out / "runs" / "add_pminus_s0"
    assert "hard_negatives.json" in (pminus / "config.yaml").read_text()
    assert (out / "runs" / "add_s0" / "hard_negatives" / "HardNegatives.pkl").is_file()
    for name in ("MinedLesions.pkl", "mined_lesions.json", "mined_lesions.png"):
        assert (out / "runs" / "add_s0" / name).is_file()
    summary = json.loads((out / "runs" / "add_s0" / "summary.json").read_text())
    assert summary["final_teacher_mining"]["slices_searched"] > 0
    assert "step" in (out / "runs" / "decay_s0" / "config.yaml").read_text()
    upper = json.loads((out / "runs" / "upper_add_s0" / "summary.json").read_text())
    assert upper["mined"] > 0 and upper["mined_precision"] == upper["mined_recall"] == 1.0
    assert "unlabeled_neighbours: 2" in (out / "runs" / "nb2_s0" / "config.yaml").read_text()
    upper_nb = json.loads((out / "runs" / "upper_nb2_s0" / "summary.json").read_text())
    assert upper_nb["training_samples"] > 2 * upper["training_samples"]  # the neighbours joined

    # the CLI mines the same pool with the same rule the experiment used
    assert main(["mine-negatives", "--model", str(out / "runs" / "add_s0"), "--data", str(out / "data"),
                 "--out", str(tmp_path / "neg"), "--min-score", "0.0", "--quiet"]) == 0
    doc = json.loads((tmp_path / "neg" / "hard_negatives.json").read_text())
    assert doc["kind"] == "hard_negatives" and len(doc["volumes"]) == BUDGETS["tiny"].synth.n_negatives
    assert all(len(v) <= 10 for v in doc["volumes"].values())
    assert (tmp_path / "neg" / "HardNegatives.pkl").is_file()
    assert main(["mine-negatives", "--model", str(out / "runs" / "add_s0"), "--out", "x"]) == 2

    stamps = {r.name: (out / "runs" / r.name / "model.pt").stat().st_mtime_ns for r in runs}
    capsys.readouterr()
    assert main(["experiment", "paper", "--budget", "tiny", "--out", str(out), "--quiet"]) == 0
    assert stamps == {r.name: (out / "runs" / r.name / "model.pt").stat().st_mtime_ns for r in runs}
    assert "report:" in capsys.readouterr().out


def test_a_finished_run_is_reused_across_speed_settings_but_not_across_real_changes(tmp_path):
    from uld.config import override, save_config
    from uld.experiment.runner import train_or_reuse

    config = load_config("demo")
    run = tmp_path / "run"
    run.mkdir()
    save_config(override(config, "data.num_workers=0"), run / "config.yaml")
    (run / "model.pt").write_bytes(b"finished")
    assert train_or_reuse(config, run, progress=False) is False  # workers change only speed
    with pytest.raises(FileExistsError, match=r"another config \(train.lr\)"):
        train_or_reuse(override(config, "train.lr=0.002"), run, progress=False)
    # a run without mining is the same run whatever the preset's mining settings, but its EMA
    baseline = override(config, "mining.policy=none")
    save_config(baseline, run / "config.yaml")
    assert train_or_reuse(override(baseline, "mining.tau=0.8", "mining.gt_contain=1.0"), run,
                          progress=False) is False
    with pytest.raises(FileExistsError, match=r"another config \(mining.ema_momentum\)"):
        train_or_reuse(override(baseline, "mining.ema_momentum=0.99"), run, progress=False)
    with pytest.raises(FileExistsError, match=r"mining.policy"):
        train_or_reuse(override(baseline, "mining.policy=add"), run, progress=False)


def test_hard_negative_retraining_needs_only_the_kept_hard_negatives_file(tmp_path):
    from uld.experiment.paper import _run_config
    from uld.mining.negatives import HARD_NEGATIVES_JSON

    base = load_config("demo")
    spec = next(r for r in paper_runs(BUDGETS["small"], 0.9) if r.hard_negatives_from)
    source = tmp_path / "runs" / spec.hard_negatives_from
    with pytest.raises(FileNotFoundError, match="needs the finished run"):
        _run_config(base, spec, tmp_path, tmp_path / "data", progress=False)
    (source / "hard_negatives").mkdir(parents=True)
    (source / "hard_negatives" / HARD_NEGATIVES_JSON).write_text("{}")  # kept, no checkpoint
    config = _run_config(base, spec, tmp_path, tmp_path / "data", progress=False)
    assert config.data.hard_negatives.endswith(f"hard_negatives/{HARD_NEGATIVES_JSON}")
