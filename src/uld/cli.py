"""The ``uld`` command line: thin subcommands over the Python API."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path


def _synth(args: argparse.Namespace) -> None:
    # imported here, not at the top: `uld --help` and every other command start without it
    from uld.data.synth import SynthConfig, format_summary, write_synthetic_dataset

    config = SynthConfig(
        n_train=args.train, n_val=args.val, n_test=args.test, size=args.size, seed=args.seed,
        missing=args.missing, missing_rate=args.missing_rate, recist_choice=args.recist_choice,
        lesion_contrast=args.lesion_contrast,
    )
    summary = write_synthetic_dataset(args.out, config, progress=not args.quiet, overwrite=args.overwrite)
    print(format_summary(summary))
    print(f"dataset written to {args.out}")


def _train(args: argparse.Namespace) -> None:
    # imported here, not at the top: `uld --help` and every other command start without it
    from uld.config import load_config
    from uld.train.loop import train

    overrides = [*args.set, f"data.root={args.data}"] if args.data else list(args.set)
    config = load_config(args.config, overrides)
    try:
        summary = train(config, args.out, resume=args.resume, progress=not args.quiet)
    finally:  # under torchrun a failed rank must still close gloo/NCCL before exiting
        import torch.distributed  # here, like the imports above, to keep start-up fast

        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only the first process reports
        print(json.dumps(summary, indent=2))


def _predict(args: argparse.Namespace) -> None:
    # imported here, not at the top: `uld --help` and every other command start without it
    import torch

    from uld.config import override
    from uld.data.sources import dataset_sources, deeplesion_sources, scan_sources
    from uld.infer.predict import load_model
    from uld.infer.scans import predict_scans

    sources = scan_sources(args.scans)
    if args.data:
        sources += dataset_sources(args.data, args.split)
    if args.deeplesion:
        sources += deeplesion_sources(args.deeplesion, args.volume, args.paper_set)
    elif args.volume or args.paper_set:
        raise ValueError("--volume and --paper-set name DeepLesion sub-volumes: add --deeplesion ROOT")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, config = load_model(args.model, device)
    config = override(config, *args.set)
    summary = predict_scans(
        model, config, sources, args.out, device, min_score=args.min_score,
        overlays=not args.no_overlays, max_overlays=args.max_overlays, progress=not args.quiet,
        dicom_sr=args.dicom_sr,
    )
    print(
        f"{summary['tracklets']} tracklets in {summary['volumes']} volumes "
        f"({summary['slices_per_second']:.1f} slices/s); {summary['lesions_written']} lesions "
        f"scoring >= {args.min_score:g} written to {args.out}; all tracklets in {summary['detections']}"
    )


def _evaluate(args: argparse.Namespace) -> None:
    # imported here, not at the top: `uld --help` and every other command start without it
    from uld.atomic import write_text
    from uld.eval.session import evaluate_files

    options = {"score": args.score} if args.protocol == "keyslice" else {}
    shift = "auto" if args.pixel_shift == "auto" else float(args.pixel_shift)
    evaluation = evaluate_files(args.protocol, args.gt, args.detections, args.split, args.iou,
                                shift, args.dl_info, args.only_gt_volumes, **options)
    print(evaluation.format())
    if args.json:
        write_text(args.json, json.dumps(evaluation.to_json(), indent=2) + "\n")
    if args.plot:
        from uld.eval.plots import plot_froc  # matplotlib: only when a plot is asked for

        result = evaluation.result
        label = Path(args.detections).stem
        plot_froc({label: (result.fps, result.sens)}, args.plot,
                  fp_rates=list(result.sensitivity), xlabel=f"false positives per {result.unit}",
                  title=f"FROC, {args.protocol}",
                  readings={label: list(result.sensitivity.values())})


def _convert(args: argparse.Namespace) -> None:
    # imported here, not at the top: `uld --help` and every other command start without it
    from uld.data.deeplesion import convert_deeplesion

    root = Path(args.root)
    harvester = Path(args.harvester) if args.harvester else root / "lesion_harvester"
    summary = convert_deeplesion(
        root, args.out, harvester, on_error=args.on_bad_input, progress=not args.quiet,
        dl_info_path=args.dl_info, negatives=args.negatives, overwrite=args.overwrite,
    )
    volumes, boxes = summary["volumes"], summary["boxes"]
    print("  ".join(f"{s}: {volumes[s]} volumes, {boxes[s]} boxes" for s in ("train", "val", "test")))
    print(f"hard-negative pool ({summary['negatives']['mode']}): {summary['negatives']['volumes']} volumes; "
          f"{summary['dropped_noisy']} noisy lesions left out; {len(summary['skipped'])} inputs skipped")
    for message in summary["skipped"][:10]:
        print(f"  skipped: {message}")
    print(f"dataset written to {args.out}")


def _mine_negatives(args: argparse.Namespace) -> None:
    # imported here, not at the top: `uld --help` and every other command start without it
    import torch

    from uld.data.annotations import read_gt
    from uld.data.deeplesion import HARVESTER_FILES, to_zero_based
    from uld.data.sources import dataset_sources, deeplesion_sources
    from uld.infer.predict import load_model
    from uld.mining.negatives import NegativeRule, mine_negatives, pool_truth

    if bool(args.data) == bool(args.deeplesion):
        raise ValueError("give the fully annotated volumes with either --data DIR or --deeplesion ROOT")
    if args.data:
        sources, truth = dataset_sources(args.data, "negatives"), pool_truth(args.data)
    else:
        root = Path(args.deeplesion)
        harvester = Path(args.harvester) if args.harvester else root / "lesion_harvester"
        sources = deeplesion_sources(root, paper_set="negatives", harvester_dir=str(harvester))
        pool = read_gt(harvester / HARVESTER_FILES["negatives"])  # 1-based, as DL_info
        truth = {name: [(z, to_zero_based(box)) for z, box in boxes] for name, boxes in pool.items()}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, config = load_model(args.model, device)
    rule = NegativeRule(args.min_score, args.match_iou, args.z_margin, args.per_volume)
    summary = mine_negatives(model, config, sources, truth, args.out, rule,
                             one_based=bool(args.deeplesion), device=device, progress=not args.quiet)
    print(f"{summary['hard_negatives']} hard negatives in {summary['volumes']} volumes: "
          f"{summary['json']} (retrain with --set data.hard_negatives=...), {summary['pickle']}")


def _check_workers(workers: int) -> None:
    if workers < 1:
        raise ValueError(f"--workers {workers}: must be at least 1")


def _experiment(args: argparse.Namespace) -> None:
    # imported here, not at the top: `uld --help` and every other command start without it
    from uld.experiment.paper import run_paper_experiment

    _check_workers(args.workers)
    report = run_paper_experiment(args.out, args.budget, progress=not args.quiet,
                                  overrides=tuple(args.set), only=tuple(args.only),
                                  workers=args.workers)
    print(f"report: {report}")


def _review(args: argparse.Namespace) -> None:
    # imported here, not at the top: `uld --help` and every other command start without it
    from uld.review import build_review

    if not args.lesions:
        raise ValueError("uld review needs --lesions (a uld predict folder or a run folder); "
                         "uld review apply turns verdicts into labels")
    page = build_review(args.lesions, args.data, args.out, scans=args.scans, neighbours=args.neighbours,
                        min_score=args.min_score, overwrite=args.overwrite, progress=not args.quiet)
    print(f"review written: {page} (open it in a browser; a accept, r reject, u unsure, e export)")


def _review_apply(args: argparse.Namespace) -> None:
    # imported here, not at the top: `uld --help` and every other command start without it
    from uld.review import apply_verdicts

    summary = apply_verdicts(args.verdicts, args.data, args.out, review=args.review,
                             overwrite=args.overwrite)
    print(f"{summary['accepted_lesions']} accepted lesions ({summary['rows_added']} boxes) of review "
          f"{summary['review_id']} added; dataset written to {summary['out']} "
          f"(train on it with: uld train --data {summary['out']} ...)")


def _demo(args: argparse.Namespace) -> None:
    # imported here, not at the top: `uld --help` and every other command start without it
    from uld.demo import run_demo

    _check_workers(args.workers)
    run_demo(args.out, quick=args.quick, progress=not args.quiet, workers=args.workers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uld", description="Universal lesion detection that learns from incomplete labels."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of input errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic CT dataset with partial labels")
    p.add_argument("--out", required=True, help="dataset folder to create")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--missing", choices=["recist", "random"], default="recist",
                   help="which lesions stay unlabeled in the train split (default: recist)")
    p.add_argument("--missing-rate", type=float, default=0.5,
                   help="share of lesions dropped by --missing random")
    p.add_argument("--recist-choice", choices=["largest", "random"], default="largest",
                   help="--missing recist measures the largest eligible lesions first, or any")
    p.add_argument("--train", type=int, default=300, help="training volumes")
    p.add_argument("--val", type=int, default=30, help="validation volumes")
    p.add_argument("--test", type=int, default=60, help="test volumes")
    p.add_argument("--size", type=int, default=128, help="slice width and height in pixels")
    p.add_argument("--lesion-contrast", type=float, default=2.0,
                   help="multiplies lesion-to-tissue contrast (1 = each kind's HU; default 2)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out (only once the new dataset is complete)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_synth)

    p = sub.add_parser("train", help="train a student/teacher pair")
    p.add_argument("--data", help="dataset folder (sets data.root)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--config", help="YAML file or preset name (demo, paper); default: paper")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set mining.policy=none")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_train)

    p = sub.add_parser(
        "predict", help="find 3D lesions in scans (NIfTI, DICOM, DeepLesion, a dataset split)",
        description="Writes per volume NAME.lesions.json/.csv, slicer/NAME.lesion-ID.mrk.json "
        "(3D Slicer ROIs), overlays/NAME.lesion-ID.png; lesions.csv over all volumes; and "
        "detections.json with every tracklet (for uld evaluate), written last.",
    )
    p.add_argument("scans", nargs="*", help="NIfTI files and/or folders holding one DICOM series")
    p.add_argument("--model", required=True, help="run folder or model file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data", help="a dataset folder (generic format): predict one of its splits")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "negatives"],
                   help="split of --data (default test)")
    p.add_argument("--deeplesion", metavar="ROOT", help="a DeepLesion root (Images_png, DL_info.csv)")
    p.add_argument("--volume", action="append", default=[], metavar="NAME",
                   help="a DeepLesion sub-volume, e.g. 000001_03_01_058-118 (repeatable)")
    p.add_argument("--paper-set", choices=["val", "test", "negatives"],
                   help="every sub-volume of this set of the paper's split (needs ROOT/lesion_harvester)")
    p.add_argument("--min-score", type=float, default=0.5,
                   help="lesions written to JSON/CSV/Slicer/PNG score at least this (default 0.5); "
                   "detections.json keeps every tracklet")
    p.add_argument("--max-overlays", type=int, default=20, help="overlay PNGs per volume at most")
    p.add_argument("--no-overlays", action="store_true", help="write no PNGs")
    p.add_argument("--dicom-sr", action="store_true",
                   help="also write NAME.sr.dcm per DICOM series: a TID 1500 Structured Report, each "
                   "lesion a planar ROI on its peak slice with its score (for PACS / OHIF)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an inference value, e.g. --set infer.batch_size=32")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_predict)

    p = sub.add_parser("evaluate", help="score detections with a DeepLesion protocol")
    p.add_argument("--gt", required=True,
                   help="annotation pickle (Revised-Test1071.pkl, RECIST-Box-Test.pkl, 3D-Box.pkl, "
                   "the manual 1K pickle) or a dataset folder (with --split)")
    p.add_argument("--detections", required=True,
                   help="detections.json, a folder holding it, or a Lesion Harvester pickle")
    p.add_argument("--protocol", choices=["p3d", "keyslice", "iobb3d"], default="p3d",
                   help="p3d: Lesion Harvester (default); keyslice: the official key-slice test "
                   "(MULAN/3DCE); iobb3d: the manual 1K set's 3D boxes")
    p.add_argument("--split", choices=["train", "val", "test"],
                   help="split of a dataset folder, or of the manual 1K pickle (val or test)")
    p.add_argument("--iou", type=float, default=None,
                   help="hit threshold (default: the protocol's, 0.5 IoU or 0.3 IOBB)")
    p.add_argument("--score", choices=["box", "tracklet"], default="box",
                   help="keyslice: score a key-slice box by its own score or its tracklet's")
    p.add_argument("--dl-info", help="DL_info.csv: mm sizes and lesion types for DeepLesion ground truth")
    p.add_argument("--pixel-shift", default="auto",
                   help="pixels added to detection boxes; auto: +1 for uld JSON against a "
                   "DeepLesion pickle (1-based), else 0")
    p.add_argument("--only-gt-volumes", action="store_true",
                   help="leave out detections of volumes the ground truth does not list (default: "
                   "such a volume is an error)")
    p.add_argument("--json", help="write the figures and the breakdown to this JSON file")
    p.add_argument("--plot", help="write the FROC curve to this PNG file")
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("convert", help="write another dataset in the generic format")
    p.add_argument("source", choices=["deeplesion"], help="what to convert")
    p.add_argument("--root", required=True, help="DeepLesion root (Images_png/, DL_info.csv)")
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--harvester",
                   help="folder of Lesion Harvester's Revised-*.pkl (default ROOT/lesion_harvester)")
    p.add_argument("--dl-info", help="DL_info.csv (default ROOT/DL_info.csv)")
    p.add_argument("--negatives", choices=["list", "train", "omit"], default="list",
                   help="the 744 hard-negative sub-volumes: listed apart (default), in train, or left out")
    p.add_argument("--on-bad-input", choices=["stop", "skip"], default="stop",
                   help="a bad row or file stops the conversion (default) or is skipped and reported")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out (only once the conversion is complete)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_convert)

    p = sub.add_parser(
        "mine-negatives", help="hard negatives (P-) of a trained teacher on fully annotated volumes",
        description="Runs the model over every slice of the fully annotated training volumes "
        "(split 'negatives' of --data, or Revised-Train744 of --deeplesion) and writes its "
        "confident detections that match no lesion: OUT/hard_negatives.json (read by "
        "data.hard_negatives) and OUT/HardNegatives.pkl (Lesion Harvester's 2D layout).",
    )
    p.add_argument("--model", required=True, help="run folder or model file (the teacher)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data", help="a dataset folder with a 'negatives' split")
    p.add_argument("--deeplesion", metavar="ROOT", help="a DeepLesion root (uses Revised-Train744)")
    p.add_argument("--harvester", help="Lesion Harvester folder (default ROOT/lesion_harvester)")
    p.add_argument("--min-score", type=float, default=0.5, help="detection score at least this")
    p.add_argument("--match-iou", type=float, default=0.3,
                   help="a detection overlapping a lesion box this much (IoU) is no hard negative")
    p.add_argument("--z-margin", type=int, default=2,
                   help="lesion boxes this many slices away count as on the detection's slice")
    p.add_argument("--per-volume", type=int, default=10,
                   help="keep the highest scoring this many per volume (Lesion Harvester: 10)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_mine_negatives)

    p = sub.add_parser(
        "experiment", help="the paper's experiments on the synthetic benchmark, with a report",
        description="Main rows (oracle, baseline, add, ignore per seed), ablations (tau 0.95-0.80, "
        "lr decay, upper bounds, hard negatives, random missingness) and, with --only sweep, the "
        "sparsity sweep; every teacher evaluated with P3D; OUT/report.md holds Tables I-IV and "
        "every comparison as a paired difference with its 95 %% interval over seeds. Finished "
        "steps are reused, interrupted runs resumed.",
    )
    p.add_argument("name", choices=["paper"], help="which experiment")
    p.add_argument("--budget", choices=["default", "small", "tiny"], default="default",
                   help="default: 5 seeds for the main rows, 2 for the ablations and the sweep; "
                   "small: 1 seed; tiny: a pipeline check")
    p.add_argument("--out", default="runs/paper", help="output folder (default runs/paper)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value of every run")
    p.add_argument("--only", action="append", default=[], metavar="RUN|GROUP",
                   help="run only this run or group (repeatable), e.g. --only add_s0, --only sweep; "
                   "groups: main, ablations, sweep (default: main and ablations)")
    p.add_argument("--workers", type=int, default=1,
                   help="runs trained at once, each with its share of the CPU threads "
                   "(default 1; 2 on a 2-core machine is about 1.4x faster)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_experiment)

    p = sub.add_parser(
        "review", help="a review page of predicted or mined lesions; 'review apply' adds the accepted ones",
        description="Writes OUT/index.html (open it from the file system; keyboard: a accept, r reject, "
        "u unsure, arrows move, e export verdicts.json), OUT/images/ and OUT/manifest.json. "
        "'uld review apply --verdicts verdicts.json --data DIR --out NEWDIR' writes a copy of the "
        "dataset with the accepted lesions added to annotations.csv (column provenance).",
    )
    p.add_argument("--lesions", help="a uld predict output folder, a run folder with mined_lesions.json, "
                   "or a mined_lesions.json")
    p.add_argument("--data", help="dataset folder holding the volumes (default: the run's data.root, or "
                   "the scans the predictions name)")
    p.add_argument("--scans", nargs="+", default=[], metavar="SCAN",
                   help="NIfTI files / DICOM folders of the predicted volumes (matched by name)")
    p.add_argument("--out", help="review folder to write (index.html, images/, manifest.json)")
    p.add_argument("--neighbours", type=int, default=3, help="slices shown on either side of the peak (3)")
    p.add_argument("--min-score", type=float, default=0.0, help="leave out lesions scoring below this")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out that is not an earlier review")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_review)
    review_sub = p.add_subparsers(dest="review_command")
    q = review_sub.add_parser("apply", help="a new dataset folder with the accepted lesions as labels")
    q.add_argument("--verdicts", required=True, help="verdicts.json exported from the review page")
    q.add_argument("--data", required=True, help="the dataset folder (never edited)")
    q.add_argument("--out", required=True, help="the new dataset folder")
    q.add_argument("--review", help="the review folder (default: the one verdicts.json names)")
    q.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    q.set_defaults(run=_review_apply)

    p = sub.add_parser("demo", help="synthetic data -> oracle, baseline, mining -> report")
    p.add_argument("--quick", action="store_true", help="a smaller run (about 3 minutes)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--workers", type=int, default=3,
                   help="runs trained at once, each with its share of the CPU threads (default 3: "
                        "all of them)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Exit codes: 0 done; 2 bad input, bad settings, a NaN in training or a
    failed write (one line naming the file, row or value); 130 interrupted (Ctrl-C; training
    saves ``last.pt`` first and says how to resume); 1 an unexpected error (one line; ``--debug``
    shows the traceback)."""
    # imported here, not at the top: `uld --help` and every other command start without it
    from uld.outdir import check_out_folder
    from uld.train.interrupt import TrainingInterrupted  # torch-free: evaluate starts without torch

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "out", None):
            check_out_folder(Path(args.out))
        args.run(args)
    except TrainingInterrupted as exc:
        print(f"uld: {exc.line(argv)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"uld: interrupted{_resume_hint(args, argv)}", file=sys.stderr)
        return 130
    except (ValueError, OSError, ArithmeticError) as exc:  # bad input: one line naming file, row or value
        if args.debug:
            raise
        print(f"uld: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except RecursionError:
        if args.debug:
            raise
        print("uld: error: an input file is nested too deeply to be read", file=sys.stderr)
        return 2
    except Exception as exc:  # the last line of defence: never a bare traceback
        if args.debug:
            raise
        print(f"uld: error: unexpected {exc.__class__.__name__}: {_one_line(exc)} "
              "(uld --debug ... shows the traceback; please report it)", file=sys.stderr)
        return 1
    return 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or exc.__class__.__name__


def _resume_hint(args: argparse.Namespace, argv: Sequence[str]) -> str:
    """For ``uld train`` with a checkpoint on disk: how to go on."""
    if args.command != "train" or not (Path(args.out) / "last.pt").is_file():
        return ""
    again = " ".join(shlex.quote(a) for a in argv if a != "--resume")
    return f"; {Path(args.out) / 'last.pt'} holds the last checkpoint; resume with: uld {again} --resume"


if __name__ == "__main__":
    sys.exit(main())
