"""Compare the overlap linker and the Kalman linker on a trained model's real detections, and
measure the duplicate suppression of issue 16 (:mod:`uld.infer.suppress`) before and after.

    python benchmarks/bench_linking.py [--run runs/demo/baseline] [--data runs/demo/data]
        [--split test] [--cache runs/bench_linking] [--tune] [--redetect]
        [--suppress [--contain T --area-ratio R --merge T --merge-gap G --trim T --smooth K]
        [--bootstrap N]] [--tune-suppress] [--tune-trim] [--tune-smooth]

Detects once per volume of the split (model ``--run``: a run folder's ``best.pt``, else its
``model.pt``, or a ``.pt`` file and its folder's ``config.yaml``; CPU, one torch thread)
and caches the per-slice detections in ``<cache>/detections_<split>.npz`` (reused while the
model file, data folder and split are the same; ``--redetect`` after a change to
``detect_slices``). Then links them with :func:`uld.infer.link.link_by_iou` (the run's
``infer.overlap``) and :func:`uld.infer.kalman.link_kalman` (the run's
``infer.kalman``, i.e. the :class:`KalmanLinkerParams` defaults for runs that set none) and prints
per linker: tracklet purity (per tracklet and box-weighted), lesion completeness, fragments per
lesion, tracklets, tracklets mixing two lesions (:mod:`uld.eval.linking_quality`, against
``annotations_full.csv``), the linking time per volume (best of 3), and the P3D AVG / AP in %
(:func:`uld.eval.p3d.evaluate_p3d`) against the split's ``annotations.csv`` (key slices, what
``uld evaluate`` uses) and against every slice of every lesion (``annotations_full.csv``).

``--tune`` instead runs a small grid of Kalman parameters around the defaults (only on
``--split val``; the test split is refused) and prints one line per setting. Not part of the
test suite. ``docs/linking.md`` reports the figures.

``--suppress`` instead compares the run's linker without suppression ("before": contain and
merge thresholds at 1) and with it ("after": ``--contain``, ``--area-ratio``, ``--merge``,
``--merge-gap``, by default the run's ``infer.*`` values), both through
:func:`uld.infer.predict.find_lesions` as ``uld predict`` runs it, and adds the lesions written
per volume (tracklets scoring >= ``--min-score``, 0.5 as ``uld predict``) and a paired bootstrap
over volumes (``--bootstrap`` resamples, 1000; the same resampled volumes for both) giving the
95 % interval of each after - before difference. ``--tune-suppress`` runs the grid of those four
settings (validation split only). ``--trim`` adds to "after" the trimming of each lesion's weak
ends (:func:`uld.infer.suppress.trim_tracklet_ends`, as ``find_lesions`` runs it at
``infer.trim_thresh``; 0, the default, is off), and a second bootstrap gives the trimming's
own effect (trimmed - untrimmed). ``--tune-trim`` runs a grid of it on top of the run's
settings, with ``--bootstrap`` resamples of each row against the untrimmed lesions (validation
split only). ``--smooth K``
sets "after"'s smoothing of each lesion's boxes along z (:mod:`uld.infer.smooth`, applied last,
after any trimming; "before" never smooths), and a further bootstrap gives its own effect;
``--tune-smooth`` runs a grid of it (validation split only).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from uld.config import InferConfig, KalmanLinkerParams
from uld.data.annotations import GroundTruth, Tracklet, read_gt
from uld.eval.linking_quality import LesionTruth, LinkingQuality, linking_quality, read_lesion_truth
from uld.eval.p3d import P3DResult, evaluate_p3d
from uld.infer.kalman import link_kalman
from uld.infer.link import SliceDetections, link_by_iou
from uld.infer.predict import find_lesions

Linker = Callable[[Sequence[SliceDetections]], list[Tracklet]]
VolumeDetections = dict[str, list[SliceDetections]]


def _cache_meta(model_file: Path, data: Path, split: str) -> dict[str, object]:
    stat = model_file.stat()
    return {"model": str(model_file.resolve()), "model_size": stat.st_size,
            "model_mtime_ns": stat.st_mtime_ns, "data": str(data.resolve()), "split": split}


def _save(path: Path, dets: VolumeDetections, meta: dict[str, object]) -> None:
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
    for v, (name, slices) in enumerate(dets.items()):
        arrays[f"name_{v}"] = np.array(name)
        arrays[f"slice_z_{v}"] = np.array([s.z for s in slices], dtype=np.int64)
        arrays[f"count_{v}"] = np.array([len(s.scores) for s in slices], dtype=np.int64)
        arrays[f"boxes_{v}"] = np.concatenate([s.boxes.reshape(-1, 4) for s in slices] + [np.zeros((0, 4))])
        arrays[f"scores_{v}"] = np.concatenate([s.scores.reshape(-1) for s in slices] + [np.zeros(0)])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def _load(path: Path, meta: dict[str, object]) -> VolumeDetections | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        if json.loads(str(f["meta"])) != meta:
            return None
        out: VolumeDetections = {}
        v = 0
        while f"name_{v}" in f:
            ends = np.cumsum(f[f"count_{v}"])
            boxes = np.split(f[f"boxes_{v}"], ends[:-1])
            scores = np.split(f[f"scores_{v}"], ends[:-1])
            out[str(f[f"name_{v}"])] = [
                SliceDetections(int(z), b, s) for z, b, s in zip(f[f"slice_z_{v}"], boxes, scores)
            ]
            v += 1
    return out


def run_model_file(run: Path) -> Path:
    """The model file ``--run`` names: a ``.pt`` file itself, or a run folder's ``best.pt`` (else
    its ``model.pt``), as :func:`uld.infer.predict.load_model` picks."""
    if run.is_file():
        return run
    return run / "best.pt" if (run / "best.pt").is_file() else run / "model.pt"


def detections_for(
    run: Path, data: Path, split: str, cache: Path, redetect: bool = False
) -> VolumeDetections:
    """Per-slice detections of every volume of ``split``, from the cache or by running the model.

    The cache is keyed by the model file (path, size, mtime), the data folder and the split, not
    by the code: pass ``redetect`` after changing ``detect_slices``.
    """
    model_file = run_model_file(run)
    meta = _cache_meta(model_file, data, split)
    path = cache / f"detections_{split}.npz"
    cached = None if redetect else _load(path, meta)
    if cached is not None:
        print(f"detections: cache {path}")
        return cached
    import torch

    from uld.data.dataset import DatasetFolder
    from uld.data.samples import VolumeStore
    from uld.infer.predict import detect_slices, load_model

    torch.set_num_threads(1)
    model, config = load_model(model_file)
    folder = DatasetFolder(data)
    store = VolumeStore(folder, cache=False)
    out: VolumeDetections = {}
    t0 = time.perf_counter()
    for name in folder.volumes(split):
        out[name] = detect_slices(model, store[name], config)
    print(f"detections: {len(out)} {split} volumes in {time.perf_counter() - t0:.0f} s -> {path}")
    _save(path, out, meta)
    return out


def full_gt(truth: Mapping[str, LesionTruth]) -> GroundTruth:
    """Every lesion box on every slice as P3D ground truth."""
    return {name: [(int(z), b) for z, b in zip(t.z, t.boxes)] for name, t in truth.items()}


def split_inputs(
    run: Path, data: Path, split: str, cache: Path, redetect: bool = False,
) -> tuple[VolumeDetections, dict[str, LesionTruth], GroundTruth, GroundTruth]:
    """A split's per-slice detections (``detections_for``), its lesion truth on every slice,
    and its ground truth for P3D on the key slices and on every slice."""
    truth = read_lesion_truth(data, split)
    return (detections_for(run, data, split, cache, redetect), truth,
            read_gt(data, split=split), full_gt(truth))


def measure(
    linker: Linker, dets: VolumeDetections, truth: Mapping[str, LesionTruth],
    gt_key: GroundTruth, gt_full: GroundTruth, repeat: int = 3,
) -> dict[str, float]:
    """Quality, P3D and seconds per volume (best of ``repeat``) of one linker."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        linked = {name: linker(slices) for name, slices in dets.items()}
        best = min(best, time.perf_counter() - t0)
    quality = linking_quality(truth, linked)
    key = evaluate_p3d(gt_key, linked)
    full = evaluate_p3d(gt_full, linked)
    return {**_scores(quality, key, full, linked), "ms_per_volume": 1000 * best / max(len(dets), 1)}


def _scores(quality: LinkingQuality, key: P3DResult, full: P3DResult,
            linked: Mapping[str, Sequence[Tracklet]], min_score: float = 0.5) -> dict[str, float]:
    written = [sum(max(b[4] for _, b in t) >= min_score for t in tracklets) for tracklets in linked.values()]
    return {
        "purity": quality.purity,
        "purity_boxes": quality.purity_boxes,
        "completeness": quality.completeness,
        "fragments": quality.fragments,
        "tracklets": quality.n_tracklets,
        "mixed": quality.n_mixed_tracklets,
        "lesions_per_volume": float(np.mean(written)) if written else 0.0,
        "avg": 100 * key.avg,
        "ap": 100 * key.ap,
        "avg_full": 100 * full.avg,
        "ap_full": 100 * full.ap,
    }


_FORMATS = {"purity": ".3f", "purity_boxes": ".3f", "completeness": ".3f", "fragments": ".3f",
            "tracklets": ".0f", "mixed": ".0f", "lesions_per_volume": ".2f", "ms_per_volume": ".1f",
            "avg": ".2f", "ap": ".2f",
            "avg_full": ".2f", "ap_full": ".2f"}


def _row(label: str, m: Mapping[str, float]) -> str:
    return f"| {label} | " + " | ".join(format(m[c], f) for c, f in _FORMATS.items()) + " |"


def _header(first: str) -> str:
    return f"| {first} | " + " | ".join(_FORMATS) + " |\n|" + "---|" * (len(_FORMATS) + 1)


_SUPPRESS_FORMATS = {k: _FORMATS[k] for k in (
    "purity", "completeness", "fragments", "tracklets", "mixed", "lesions_per_volume", "ms_per_volume",
    "avg", "ap", "avg_full", "ap_full")}


def _row_s(label: str, m: Mapping[str, float]) -> str:
    return f"| {label} | " + " | ".join(format(m[c], f) for c, f in _SUPPRESS_FORMATS.items()) + " |"


PROBE_COLUMNS = ("purity", "completeness", "avg", "ap", "ap_full")
"""The measures the issue-16 probes print a row of (``probe_cells``)."""


def probe_cells(m: Mapping[str, float]) -> str:
    """``m``'s PROBE_COLUMNS as table cells: ``"0.902 | 1.000 | 60.16 | 65.58 | 41.00"``."""
    return " | ".join(format(m[c], _FORMATS[c]) for c in PROBE_COLUMNS)


def _header_s(first: str) -> str:
    return f"| {first} | " + " | ".join(_SUPPRESS_FORMATS) + " |\n|" + "---|" * (len(_SUPPRESS_FORMATS) + 1)


def tune_grid() -> list[dict[str, float]]:
    """The settings ``--tune`` tries (one-at-a-time changes and a few joint ones)."""
    grid: list[dict[str, float]] = [{}]
    for name, values in (
        ("gate", (9.49, 11.0, 16.0, 20.0)),
        ("pos_measure_std", (0.05, 0.2)),
        ("size_measure_std", (0.05, 0.2)),
        ("pos_process_std", (0.0, 0.1)),
        ("size_process_std", (0.05, 0.2)),
        ("vel_process_std", (0.0, 0.1)),
        ("init_vel_std", (0.02, 0.1, 0.3)),
        ("min_size_px", (2.0, 8.0)),
        ("max_gap", (0, 2)),
    ):
        grid.extend({name: v} for v in values)
    for g, v in itertools.product((9.49, 16.0), (0.03, 0.08)):
        grid.append({"gate": g, "init_vel_std": v, "vel_process_std": v})
    return grid


SUPPRESS_KEYS = ("contain_thresh", "contain_area_ratio", "merge_thresh", "merge_gap", "smooth_slices",
                 "smooth_ends")
_OFF = {"contain_thresh": 1.0, "merge_thresh": 1.0, "smooth_slices": 0}


def _suppressed(dets: VolumeDetections, infer: InferConfig, trim: float = 0.0) -> dict[str, list[Tracklet]]:
    """``find_lesions``, trimming lesions' ends at ``trim`` if that is above ``infer``'s own."""
    setting = replace(infer, trim_thresh=max(infer.trim_thresh, trim))
    return {name: find_lesions(slices, setting)[0] for name, slices in dets.items()}


def evaluate_linked(
    linked: Mapping[str, Sequence[Tracklet]], truth: Mapping[str, LesionTruth],
    gt_key: GroundTruth, gt_full: GroundTruth, min_score: float = 0.5,
) -> dict[str, float]:
    """Quality, lesions written per volume (score >= ``min_score``) and P3D of linked tracklets."""
    return _scores(linking_quality(truth, linked), evaluate_p3d(gt_key, linked),
                   evaluate_p3d(gt_full, linked), linked, min_score)


def _resample(mapping: Mapping[str, object], names: Sequence[str]) -> dict[str, object]:
    return {f"{name}#{k}": mapping.get(name, []) for k, name in enumerate(names)}


BOOTSTRAP_KEYS = ("fragments", "purity", "completeness", "lesions_per_volume", "avg", "ap")


def paired_bootstrap(
    before: Mapping[str, Sequence[Tracklet]], after: Mapping[str, Sequence[Tracklet]],
    truth: Mapping[str, LesionTruth], gt_key: GroundTruth, gt_full: GroundTruth,
    n: int = 1000, seed: int = 0, min_score: float = 0.5,
) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals of ``after - before`` for :data:`BOOTSTRAP_KEYS`: both are
    evaluated (with the unchanged P3D evaluator) on the same ``n`` resamples of the volumes,
    drawn with replacement (a volume drawn twice counts twice)."""
    rng = np.random.default_rng(seed)
    names = sorted(truth)
    diffs: dict[str, list[float]] = {k: [] for k in BOOTSTRAP_KEYS}
    for _ in range(n):
        pick = [names[i] for i in rng.integers(0, len(names), len(names))]
        t, gk, gf = _resample(truth, pick), _resample(gt_key, pick), _resample(gt_full, pick)
        b = evaluate_linked(_resample(before, pick), t, gk, gf, min_score)
        a = evaluate_linked(_resample(after, pick), t, gk, gf, min_score)
        for k in BOOTSTRAP_KEYS:
            diffs[k].append(a[k] - b[k])
    return {k: (float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))) for k, v in diffs.items()}


def suppress_grid() -> list[dict[str, float]]:
    """The settings ``--tune-suppress`` tries: containment alone, merging alone, then both."""
    grid: list[dict[str, float]] = [dict(_OFF)]
    for contain, ratio in itertools.product((0.9, 0.8, 0.7, 0.6, 0.5, 0.4), (0.0, 0.1, 0.2)):
        grid.append({"contain_thresh": contain, "contain_area_ratio": ratio, "merge_thresh": 1.0})
    for merge, gap, ratio in itertools.product((0.8, 0.6, 0.5, 0.4, 0.3), (0, 1, 2), (0.0, 0.1)):
        grid.append({"contain_thresh": 1.0, "contain_area_ratio": ratio, "merge_thresh": merge,
                     "merge_gap": gap})
    for contain, merge, gap, ratio in itertools.product((0.7, 0.6, 0.5), (0.6, 0.5, 0.4, 0.3), (1, 2),
                                                        (0.0, 0.1)):
        grid.append({"contain_thresh": contain, "contain_area_ratio": ratio, "merge_thresh": merge,
                     "merge_gap": gap})
    return grid


TRIM_GRID = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
"""The ``trim`` values ``--tune-trim`` tries."""
SMOOTH_GRID = (1, 2, 3)
"""The ``infer.smooth_slices`` values ``--tune-smooth`` tries."""


def _label(infer: InferConfig, trim: float = 0.0) -> str:
    return ", ".join(f"{k}={getattr(infer, k)}" for k in SUPPRESS_KEYS) + (f", trim={trim}" if trim else "")


def compare_suppression(
    dets: VolumeDetections, truth: Mapping[str, LesionTruth], gt_key: GroundTruth, gt_full: GroundTruth,
    infer: InferConfig, after: InferConfig, tune: bool, n_bootstrap: int, min_score: float,
    trim: float = 0.0, tune_trim: bool = False, tune_smooth: bool = False,
) -> None:
    """Print the before/after table and the paired bootstrap (or, with ``tune``, the grid; with
    ``tune_trim`` / ``tune_smooth``, the trimming / smoothing grid on top of ``after``, each
    row's bootstrap against ``after`` without that step)."""

    def run(setting: InferConfig, cut: float = 0.0) -> tuple[dict[str, list[Tracklet]], dict[str, float]]:
        t0 = time.perf_counter()
        linked = _suppressed(dets, setting, cut)
        ms = 1000 * (time.perf_counter() - t0) / max(len(dets), 1)
        return linked, {**evaluate_linked(linked, truth, gt_key, gt_full, min_score), "ms_per_volume": ms}

    before_cfg = replace(infer, **_OFF)
    before, base = run(before_cfg)
    print(_header_s("setting"))
    print(_row_s(f"before: {_label(before_cfg)}", base))
    if tune:
        for change in suppress_grid()[1:]:
            setting = replace(infer, **{"smooth_slices": 0, **change})
            print(_row_s(_label(setting), run(setting)[1]), flush=True)
        return
    if tune_trim or tune_smooth:
        name, grid = ("smooth_slices", SMOOTH_GRID) if tune_smooth else ("trim", TRIM_GRID)

        def variant(value: float) -> tuple[dict[str, list[Tracklet]], dict[str, float]]:
            """``after`` with the tuned step at ``value`` (0: without it)."""
            return run(replace(after, smooth_slices=int(value)), trim) if tune_smooth else run(after, value)

        untouched, res = variant(0)
        print(_row_s(f"without {name}: {_label(after)}", res))
        intervals = []
        for value in grid:
            changed, res_cut = variant(value)
            print(_row_s(f"{name}={value}", res_cut), flush=True)
            ci = paired_bootstrap(untouched, changed, truth, gt_key, gt_full, n_bootstrap,
                                  min_score=min_score)
            intervals.append((value, ci))
        print(f"\npaired bootstrap ({n_bootstrap} resamples), with - without, 95 % interval")
        print("| value | " + " | ".join(BOOTSTRAP_KEYS) + " |\n|" + "---|" * (len(BOOTSTRAP_KEYS) + 1))
        for cut, ci in intervals:
            cells = [f"{ci[k][0]:+{_FORMATS[k]}} .. {ci[k][1]:+{_FORMATS[k]}}" for k in BOOTSTRAP_KEYS]
            print(f"| {cut} | " + " | ".join(cells) + " |")
        return
    linked, res = run(after, trim)
    print(_row_s(f"after: {_label(after, trim)}", res))
    ci = paired_bootstrap(before, linked, truth, gt_key, gt_full, n_bootstrap, min_score=min_score)
    print(f"\npaired bootstrap over {len(truth)} volumes ({n_bootstrap} resamples): after - before, "
          "95 % interval")
    print("| measure | before | after | difference | 95 % CI |\n|---|---|---|---|---|")
    for k in BOOTSTRAP_KEYS:
        f, (lo, hi) = _FORMATS[k], ci[k]
        print(f"| {k} | {base[k]:{f}} | {res[k]:{f}} | {res[k] - base[k]:+{f}} | {lo:+{f}} .. {hi:+{f}} |")
    steps = [("the trimming", run(after)[0] if trim > 0 else None),
             ("the smoothing", run(replace(after, smooth_slices=0), trim)[0]
              if after.smooth_slices > 0 else None)]
    for step, without in steps:
        if without is None:
            continue
        res0 = evaluate_linked(without, truth, gt_key, gt_full, min_score)
        ci = paired_bootstrap(without, linked, truth, gt_key, gt_full, n_bootstrap, min_score=min_score)
        print(f"\n{step} alone: after - after without it, 95 % interval")
        print("| measure | without | with | difference | 95 % CI |\n|---|---|---|---|---|")
        for k in BOOTSTRAP_KEYS:
            f, (lo, hi) = _FORMATS[k], ci[k]
            diff = res[k] - res0[k]
            print(f"| {k} | {res0[k]:{f}} | {res[k]:{f}} | {diff:+{f}} | {lo:+{f}} .. {hi:+{f}} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo/baseline"))
    parser.add_argument("--data", type=Path, default=Path("runs/demo/data"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench_linking"))
    parser.add_argument("--tune", action="store_true", help="grid of Kalman parameters (val split)")
    parser.add_argument("--redetect", action="store_true",
                        help="run the model again even if cached detections exist (after a code change)")
    parser.add_argument("--suppress", action="store_true",
                        help="before/after duplicate suppression with a paired bootstrap")
    parser.add_argument("--tune-suppress", action="store_true", help="grid of suppression settings (val)")
    parser.add_argument("--contain", type=float, help="infer.contain_thresh of 'after' (default: the run's)")
    parser.add_argument("--area-ratio", type=float, help="infer.contain_area_ratio of 'after'")
    parser.add_argument("--merge", type=float, help="infer.merge_thresh of 'after'")
    parser.add_argument("--merge-gap", type=int, help="infer.merge_gap of 'after'")
    parser.add_argument("--trim", type=float, default=0.0,
                        help="'after' also trims lesions' ends below this share of their best score (0: off)")
    parser.add_argument("--tune-trim", action="store_true", help="grid of --trim on the run's settings (val)")
    parser.add_argument("--smooth", type=int, help="infer.smooth_slices of 'after' (default: the run's)")
    parser.add_argument("--smooth-ends", type=int, help="infer.smooth_ends of 'after' (default: the run's)")
    parser.add_argument("--tune-smooth", action="store_true",
                        help="grid of infer.smooth_slices on the run's settings (val)")
    parser.add_argument("--min-score", type=float, default=0.5, help="lesions written: score >= this")
    parser.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples")
    args = parser.parse_args()
    if not 0.0 <= args.trim <= 1.0:
        parser.error(f"--trim = {args.trim}: must lie in [0, 1]")
    for flag, value in (("--smooth", args.smooth), ("--smooth-ends", args.smooth_ends)):
        if value is not None and value < 0:
            parser.error(f"{flag} = {value}: must be >= 0")
    if (args.tune or args.tune_suppress or args.tune_trim or args.tune_smooth) and args.split == "test":
        parser.error("--tune selects parameters: run it on --split val, not on the test split")

    dets, truth, gt_key, gt_full = split_inputs(args.run, args.data, args.split, args.cache,
                                                 args.redetect)
    n_boxes = sum(len(s.scores) for slices in dets.values() for s in slices)
    n_slices = sum(len(slices) for slices in dets.values())
    print(f"{args.split}: {len(dets)} volumes, {n_slices} slices, {n_boxes} boxes "
          f"({n_boxes / max(n_slices, 1):.1f} per slice), {sum(t.n_lesions for t in truth.values())} "
          f"lesions, {sum(len(v) for v in gt_key.values())} key-slice boxes, "
          f"{sum(len(v) for v in gt_full.values())} lesion boxes in all")

    from uld.config import Config

    infer = Config().infer
    run_dir = args.run.parent if args.run.is_file() else args.run
    if run_dir.is_dir() and (run_dir / "config.yaml").is_file():
        import yaml

        from uld.config import config_from_dict, upgrade_saved_config

        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        infer = config_from_dict(upgrade_saved_config(saved)).infer
    if args.tune_suppress or args.suppress or args.tune_trim or args.tune_smooth:
        given = (("contain_thresh", args.contain), ("contain_area_ratio", args.area_ratio),
                 ("merge_thresh", args.merge), ("merge_gap", args.merge_gap),
                 ("smooth_slices", args.smooth), ("smooth_ends", args.smooth_ends))
        after = replace(infer, **{k: v for k, v in given if v is not None})
        compare_suppression(dets, truth, gt_key, gt_full, infer, after, args.tune_suppress,
                            args.bootstrap, args.min_score, args.trim, args.tune_trim,
                            args.tune_smooth)
        return
    default = infer.kalman  # as uld.infer.predict links
    overlap = infer.overlap
    if args.tune:
        print(_header("kalman setting"))
        overlap_linker: Linker = lambda s: link_by_iou(s, overlap.iou_threshold, overlap.max_gap)  # noqa: E731
        print(_row(f"overlap ({overlap})", measure(overlap_linker, dets, truth, gt_key, gt_full, 1)))
        for change in tune_grid():
            params = replace(default, **change)
            label = ", ".join(f"{k}={v}" for k, v in change.items()) or "defaults"
            linker: Linker = lambda s, p=params: link_kalman(s, p)  # noqa: E731
            print(_row(label, measure(linker, dets, truth, gt_key, gt_full, 1)))
        return
    print(_header("linker"))
    print(_row(f"link_by_iou(iou={overlap.iou_threshold}, max_gap={overlap.max_gap})", measure(
        lambda s: link_by_iou(s, overlap.iou_threshold, overlap.max_gap), dets, truth, gt_key, gt_full)))
    label = "link_kalman(defaults)" if default == KalmanLinkerParams() else f"link_kalman({default})"
    print(_row(label, measure(lambda s: link_kalman(s, default), dets, truth, gt_key, gt_full)))


if __name__ == "__main__":
    main()
