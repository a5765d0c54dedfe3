"""Paired differences over seeds and the bootstrap over test volumes (uld.experiment.stats)."""

import math

import pytest

from uld.experiment.stats import bootstrap_volumes, closed_share, paired_by_seed, paired_difference, resampled


def test_paired_difference_t_interval_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653: half-width 4.302653 / sqrt(3)
    d = paired_difference([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert d.n == 3 and d.mean == 2.0
    assert math.isclose(d.low, 2 - half) and math.isclose(d.high, 2 + half)
    assert not d.excludes_zero  # 2 - 2.48 < 0
    assert d.text() == "+2.0 [-0.5, +4.5]"


def test_pairing_is_what_removes_the_seed_noise():
    # a and b move together across seeds (seed noise) but a is always 1 ahead
    a, b = [50.0, 40.0, 60.0, 45.0, 55.0], [49.0, 39.2, 58.9, 44.1, 53.8]
    d = paired_difference(a, b)
    assert d.excludes_zero and d.low > 0.5


def test_single_seed_and_bad_input():
    d = paired_difference([3.0], [1.0])
    assert d.mean == 2.0 and math.isnan(d.low) and not d.excludes_zero
    assert d.text() == "+2.0 (1 seed, no interval)"
    with pytest.raises(ValueError, match="equal non-empty"):
        paired_difference([1.0], [1.0, 2.0])
    assert paired_by_seed({0: 5.0, 1: 6.0, 7: 1.0}, {1: 4.0, 0: 4.0}).mean == 1.5
    with pytest.raises(ValueError, match="no seed in common"):
        paired_by_seed({0: 1.0}, {1: 1.0})


def test_bootstrap_over_volumes_and_resampled_keys():
    values = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}

    def mean_of(names):
        return sum(values[n] for n in names) / len(names)

    interval = bootstrap_volumes(list(values), mean_of, n_resamples=500, seed=1)
    assert interval.mean == 2.5 and 1.0 <= interval.low < 2.5 < interval.high <= 4.0
    assert 0.3 < interval.sd < 0.8  # sd of a mean of 4 values with sd 1.12: about 0.56
    assert bootstrap_volumes(list(values), mean_of, 500, seed=1) == interval  # reproducible
    assert resampled({"a": [1], "b": [2]}, ["a", "a", "c"]) == {"a#0": [1], "a#1": [1], "c#0": []}


def test_closed_share():
    gap = paired_difference([10.0, 12.0], [4.0, 4.0])
    assert closed_share(gap, paired_difference([7.0, 8.0], [4.0, 4.0])) == pytest.approx(3.5 / 7)
    assert closed_share(paired_difference([1.0], [2.0]), gap) is None


def test_gap_lines_measure_mining_against_both_gaps():
    from uld.experiment.plan import RunSpec
    from uld.experiment.report import RunResult, gap_lines

    def runs(kind: str, aps: list[float]) -> list[RunResult]:
        return [RunResult(RunSpec(f"{kind}_s{seed}", kind.title(), kind, seed, ()),
                          {"ap": ap / 100, "avg": ap / 100}, {}, 0.9, 1.0)
                for seed, ap in enumerate(aps)]

    groups = {"oracle": runs("oracle", [80.0, 82.0, 84.0]), "none": runs("none", [70.0, 71.0, 72.0]),
              "upper_add": runs("upper_add", [74.0, 75.0, 76.0]), "add": runs("add", [72.0, 73.0, 74.0])}
    lines = gap_lines(groups)
    assert lines[0].startswith("- oracle - baseline: +11.0")
    assert lines[1].startswith("- perfect mining - baseline") and "+4.0" in lines[1]
    add = next(line for line in lines if line.startswith("- Add - baseline"))
    assert add.endswith("closes 18 % of the oracle gap, closes 50 % of the reachable gap")
    assert not any(line.startswith("- Upper_Add") for line in lines)  # a gap, not a mining row
    del groups["upper_add"]
    assert gap_lines(groups)[-1].endswith("closes 18 % of the oracle gap")
    assert gap_lines({"none": groups["none"], "add": groups["add"]}) == []


def test_paired_table_shows_the_validation_difference_settings_are_chosen_on():
    from uld.experiment.plan import RunSpec
    from uld.experiment.report import RunResult, paired_table

    def runs(kind: str, test: list[float], val: list[float]) -> list[RunResult]:
        return [RunResult(RunSpec(f"{kind}_s{seed}", kind, kind, seed, ()),
                          {"ap": t / 100, "avg": t / 100}, {"best_val_ap": v / 100}, 0.9, 1.0)
                for seed, (t, v) in enumerate(zip(test, val))]

    groups = {"add": runs("add", [70.0, 72.0], [60.0, 62.0]),
              "band": runs("band", [71.0, 74.0], [63.0, 64.0])}
    row = next(line for line in paired_table(groups).splitlines() if "band - add" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:4] == ["2", "+1.5 [-4.9, +7.9]"] and cells[6] == "+2.5 [-3.9, +8.9]"


def test_sweep_recovery_pairs_seeds_and_compares_each_further_row_with_its_reference():
    from uld.experiment.plan import RunSpec
    from uld.experiment.report import RunResult, sweep_comparisons, sweep_rows

    def runs(kind: str, label: str, aps: dict[int, float], group: str = "sweep") -> list[RunResult]:
        return [RunResult(RunSpec(f"{kind}_s{seed}", label, kind, seed, (), group=group,
                                  mined="none" not in kind, unlabeled=0.85 if group == "sweep" else None),
                          {"ap": ap / 100, "avg": ap / 100}, {}, 0.9, 1.0)
                for seed, ap in aps.items()]

    groups = {"oracle": runs("oracle", "Oracle", {0: 90.0, 1: 90.0}, group="main"),
              "sweep85_none": runs("sweep85_none", "EMA teacher, no mining, 85 % unlabeled",
                                   {0: 70.0, 1: 70.0, 2: 60.0, 3: 60.0}),
              "sweep85_add": runs("sweep85_add", "Mining, add, 85 % unlabeled",
                                  {0: 72.0, 1: 72.0, 2: 62.0, 3: 62.0}),
              "sweep85_upper_add": runs("sweep85_upper_add", "Perfect mining, add, 85 % unlabeled",
                                        {0: 80.0, 1: 80.0}),
              "sweep85_tau0.85": runs("sweep85_tau0.85", "Mining, add, tau 0.85, 85 % unlabeled",
                                      {0: 71.0, 1: 71.0}),
              "sweep85_none_aug": runs("sweep85_none_aug",
                                        "EMA teacher, no mining, aug, 85 % unlabeled", {0: 75.0}),
              "sweep85_add_aug": runs("sweep85_add_aug", "Mining, add, aug, 85 % unlabeled",
                                       {0: 77.0})}
    (record,) = sweep_rows(groups)
    assert record["none"] == 65.0 and record["upper_add"] == 80.0
    # perfect mining against the baseline's seeds 0 and 1 (70), not its mean over four (65)
    assert record["upper_add_recovers"] == pytest.approx(10 / 20)
    assert record["add_recovers"] == pytest.approx(2 / 25)
    assert sweep_comparisons(groups) == [
        ("sweep85_add", "sweep85_none", "85 % unlabeled: what mining (add) recovers"),
        ("sweep85_upper_add", "sweep85_none", "85 % unlabeled: what perfect mining recovers"),
        ("sweep85_add_aug", "sweep85_none_aug",
         "85 % unlabeled: mining, add, aug against EMA teacher, no mining, aug"),
        ("sweep85_none_aug", "sweep85_none",
         "85 % unlabeled: EMA teacher, no mining, aug against EMA teacher, no mining"),
        ("sweep85_tau0.85", "sweep85_none", "85 % unlabeled: what mining, add, tau 0.85 recovers")]


def test_sweep_series_put_the_oracle_at_0_and_the_further_rows_beside(tmp_path):
    from uld.experiment.plan import RunSpec
    from uld.experiment.report import RunResult, plot_sweep, sweep_series

    def runs(kind: str, label: str, aps: list[float], level: float | None = 0.85) -> list[RunResult]:
        return [RunResult(RunSpec(f"{kind}_s{seed}", label, kind, seed, (),
                                  group="sweep" if level else "main", unlabeled=level),
                          {"ap": ap / 100, "avg": ap / 100}, {}, 0.9, 1.0)
                for seed, ap in enumerate(aps)]

    groups = {"oracle": runs("oracle", "Oracle", [84.0, 86.0], None),
              "sweep85_none": runs("sweep85_none", "None, 85 % unlabeled", [66.0]),
              "sweep30_none": runs("sweep30_none", "None, 30 % unlabeled", [80.0, 82.0], 0.3),
              "sweep85_band": runs("sweep85_band", "Mining, add + band, 85 % unlabeled", [68.0])}
    series = {s["label"]: s for s in sweep_series(groups)}
    none = series["no mining"]
    assert none["x"] == [0.0, 30.0, 85.0] and none["y"] == [85.0, 81.0, 66.0]
    assert none["low"] == [1.0, 1.0, 0.0] and none["high"] == [1.0, 1.0, 0.0]
    band = series["mining, add + band"]
    assert band["x"] == [85.0] and band["y"] == [68.0] and band["style"] == "D"
    assert plot_sweep(groups, tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
