"""The teacher pass against the student step (issue 12), before and after its speed-ups.

    OMP_NUM_THREADS=1 python benchmarks/bench_teacher_pass.py [--config demo]
        [--weights RUN/model.pt] [--data DIR] [--batch 4] [--steps 40] [--amp off|bf16]
        [--teacher-amp off|bf16] [--set KEY=VALUE]

Trains one student/teacher pair per variant, from the same weights (``--weights``: a
``model.pt`` of a run with this config, so that the teacher predicts as a trained one does;
without it, random weights) on the same batches of real training samples (``--data``, or a
small synthetic dataset written to a temporary folder), in one process, the variants taking
turns step by step. Each step is ``uld.train.loop.train_step``'s: the teacher's mining pass
(timed as the teacher), then the student's forward, backward, optimiser step and EMA update
(timed as the student). Variants:

- ``before``: the teacher pass as it was (``torch.no_grad``, containment suppression over all
  of the teacher's boxes, torchvision's normalise-and-batch in both models);
- ``after``: the package's code (``uld.mining.harvest.mine_samples``, ``NoResizeTransform``).

Prints, per variant, the median seconds of the teacher pass and of the student step, the
ratio (student + teacher) / student (the issue's target: at most 1.2 at the demo preset on a
CPU) and where the teacher's time goes (forward hooks on its parts, a separate untimed pass).
Medians and ratios, because the CPU may be shared. The variants must mine identical boxes at
every step (they do the same arithmetic); the script says so or stops.

``--teacher-amp MODE`` compares instead the package's code with the teacher at ``--amp``
(variant ``amp``) and at MODE (variant ``MODE``, ``mining.teacher_amp``), the student at
``--amp`` in both. Their mined boxes may differ (another precision ranks boxes near ``tau``
differently); the script counts them.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from uld.config import Config, MiningConfig, load_config
from uld.data.samples import KeySliceDataset, Sample
from uld.data.sources import open_training_data
from uld.data.synth.config import SynthConfig
from uld.data.synth.writer import write_synthetic_dataset
from uld.infer.suppress import contained_keep
from uld.mining.ema import EMATeacher
from uld.mining.filter import mine
from uld.mining.harvest import mine_samples
from uld.model.build import build_detector
from uld.model.files import read_model_file
from uld.model.precision import Autocast, autocast
from uld.train.loop import student_batch
from uld.train.schedule import build_optimizer

Mined = list[tuple[torch.Tensor, torch.Tensor]]
Miner = Callable[[nn.Module, Sequence[Sample], MiningConfig], Mined]


class TorchvisionBatching(GeneralizedRCNNTransform):
    """The detector's transform before issue 12: torchvision's normalise and batch."""

    def resize(self, image, target=None):
        return image, target


@torch.no_grad()
def mine_before(teacher: nn.Module, batch: Sequence[Sample], config: MiningConfig) -> Mined:
    """``mine_samples`` before issue 12 (without the 3D consistency filter, off in the demo)."""
    mined = []
    for sample, p in zip(batch, teacher([s.image for s in batch])):
        boxes, scores = p["boxes"], p["scores"]
        if sample.complete:
            mined.append((boxes[:0], scores[:0]))
            continue
        if config.contain_thresh < 1.0:
            keep = contained_keep(boxes, scores, config.contain_thresh, config.contain_area_ratio)
            boxes, scores = boxes[keep], scores[keep]
        mined.append(mine(boxes, scores, sample.boxes, config.tau, config.gt_nms_iou,
                          config.gt_contain))
    return mined


class Pair:
    """One variant's student, teacher and optimiser, and its timings."""

    def __init__(self, name: str, student: nn.Module, config: Config, miner: Miner,
                 torchvision_batching: bool, teacher_amp: str | None = None) -> None:
        self.name, self.config, self.miner = name, config, miner
        self.teacher_amp = teacher_amp or config.train.amp
        self.student = copy.deepcopy(student).train()
        if torchvision_batching:
            t = self.student.transform
            self.student.transform = TorchvisionBatching(1, 1, t.image_mean, t.image_std)
        self.teacher = EMATeacher(self.student, config.mining.ema_momentum)
        tc = config.train
        self.optimizer = build_optimizer(self.student.parameters(), tc.optimizer, tc.lr,
                                         tc.momentum, tc.weight_decay)
        self.teacher_s: list[float] = []
        self.student_s: list[float] = []

    def step(self, batch: list[Sample], ratio: float, seed: int) -> Mined:
        """``train_step``'s work on ``batch``: mining, then one student step at ``ratio``
        (the samplers of anchors and proposals draw from torch's RNG, seeded with ``seed``)."""
        amp = self.config.train.amp
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        found = self.miner(Autocast(self.teacher.module, self.teacher_amp, "cpu"), batch,
                           self.config.mining)
        t1 = time.perf_counter()
        with autocast(amp, "cpu"):
            losses = self.student(*student_batch(batch, [b for b, _ in found], ratio, self.config))
        loss = sum(losses.values())
        torch.stack([v.detach().float() for v in [*losses.values(), loss]]).tolist()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.teacher.update(self.student)
        t2 = time.perf_counter()
        self.teacher_s.append(t1 - t0)
        self.student_s.append(t2 - t1)
        return found


PARTS = {  # the teacher's parts, timed by forward hooks, and what each stands for
    "transform": "normalise and batch",
    "backbone": "backbone",
    "rpn.head": "RPN head (3x3 conv, objectness, deltas)",
    "rpn.anchor_generator": "anchors",
    "rpn": "RPN decode, top-k, NMS (rest of rpn)",
    "roi_heads.box_roi_pool": "RoIAlign",
    "roi_heads.box_head": "box head (two FC layers)",
    "roi_heads.box_predictor": "box predictor",
    "roi_heads": "RoI postprocess: decode, score filter, NMS, top-k (rest of roi_heads)",
}


def teacher_parts(pair: Pair, batches: list[list[Sample]]) -> dict[str, float]:
    """Median milliseconds per batch of each part of the teacher's pass, and of the whole."""
    module = pair.teacher.module
    inside: dict[str, float] = defaultdict(float)
    starts: dict[str, float] = {}
    handles = []
    for name in PARTS:
        part = module.get_submodule(name)
        handles.append(part.register_forward_pre_hook(
            lambda _m, _a, name=name: starts.__setitem__(name, time.perf_counter())))
        handles.append(part.register_forward_hook(
            lambda _m, _a, _o, name=name: inside.__setitem__(
                name, inside[name] + time.perf_counter() - starts[name])))
    rows: dict[str, list[float]] = defaultdict(list)
    try:
        for batch in batches:
            inside.clear()
            t0 = time.perf_counter()
            pair.miner(Autocast(module, pair.teacher_amp, "cpu"), batch, pair.config.mining)
            total = time.perf_counter() - t0
            own = dict(inside)
            for parent in ("rpn", "roi_heads"):  # the parent's own work: minus its children
                own[parent] -= sum(v for k, v in inside.items() if k.startswith(parent + "."))
            own["mining filters, framework (rest)"] = total - sum(
                v for k, v in inside.items() if "." not in k)
            own["whole pass"] = total
            for key, value in own.items():
                rows[key].append(1000 * value)
    finally:
        for handle in handles:
            handle.remove()
    return {key: statistics.median(values) for key, values in rows.items()}


def _dataset(config: Config) -> KeySliceDataset:
    data = open_training_data(config.data)
    return KeySliceDataset(data.store, data.labels, config.data, data.truth, source=data.source,
                           complete=data.complete)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="demo")
    parser.add_argument("--weights", help="a model.pt of a run with this config (default: random)")
    parser.add_argument("--data", help="a dataset folder (default: a small synthetic one)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--amp", choices=("off", "bf16"), default="off")
    parser.add_argument("--teacher-amp", choices=("off", "bf16"),
                        help="compare the teacher at --amp with the teacher at this precision")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = str(Path(tmp) / "data")
            write_synthetic_dataset(root, SynthConfig(n_train=24, n_val=1, n_test=1, seed=0))
        config = load_config(args.config, [*args.set, f"data.root={root}", f"train.amp={args.amp}"])
        run(config, _dataset(config), args)


def run(config: Config, dataset: KeySliceDataset, args: argparse.Namespace) -> None:
    """Time the variants on ``dataset`` and print the figures."""
    torch.manual_seed(0)
    student = build_detector(config.model, config.data.num_slices)
    if args.weights:
        student.load_state_dict(read_model_file(args.weights)["model"])
    def package(t, b, c):
        return mine_samples(t, b, c)

    if args.teacher_amp:
        pairs = [Pair("amp", student, config, package, torchvision_batching=False),
                 Pair(args.teacher_amp, student, config, package, torchvision_batching=False,
                      teacher_amp=args.teacher_amp)]
    else:
        pairs = [Pair("before", student, config, mine_before, torchvision_batching=True),
                 Pair("after", student, config, package, torchvision_batching=False)]
    first, second = (p.name for p in pairs)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
    n_steps = args.warmup + args.steps
    batches = [[dataset[order[(s * args.batch + i) % len(order)]] for i in range(args.batch)]
               for s in range(n_steps)]
    ratios = torch.empty(n_steps).uniform_(*config.train.resize_range,
                                           generator=torch.Generator().manual_seed(1)).tolist()
    same_steps, mined = 0, {pair.name: 0 for pair in pairs}
    for s, (batch, ratio) in enumerate(zip(batches, ratios)):
        turn = pairs if s % 2 == 0 else pairs[::-1]  # who goes first alternates
        found = {pair.name: pair.step(batch, ratio, seed=s) for pair in turn}
        for name in mined:
            mined[name] += sum(len(b) for b, _ in found[name])
        same_steps += all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                          for a, b in zip(found[first], found[second]))
    if same_steps < n_steps and not args.teacher_amp:
        raise SystemExit("the variants mined different boxes: a change is not equivalent")
    print(f"config {config.name}, batch {args.batch}, {tuple(batches[0][0].image.shape)} stacks, "
          f"threads {torch.get_num_threads()}, amp {config.train.amp}, weights "
          f"{args.weights or 'random'}; {args.steps} timed steps per variant (after "
          f"{args.warmup}), taking turns; medians")
    print(f"mined boxes identical in {same_steps} of {n_steps} steps ({mined[first]} / "
          f"{mined[second]} mined in all by {first} / {second})")
    print(f"{'variant':8s} {'teacher s':>10s} {'student s':>10s} {'(s + t) / s':>12s}")
    medians = {}
    for pair in pairs:
        t = statistics.median(pair.teacher_s[args.warmup:])
        st = statistics.median(pair.student_s[args.warmup:])
        medians[pair.name] = (t, st)
        print(f"{pair.name:8s} {t:10.4f} {st:10.4f} {(st + t) / st:12.3f}")
    (tb, sb), (ta, sa) = medians[first], medians[second]
    print(f"{second} / {first}: teacher {ta / tb:.3f}, student {sa / sb:.3f}, "
          f"step {(ta + sa) / (tb + sb):.3f}")
    parts = {pair.name: teacher_parts(pair, batches[args.warmup:]) for pair in pairs}
    print(f"\nthe teacher pass by part, ms per batch (medians of {args.steps} untimed batches):")
    print(f"{'part':72s} {first:>7s} {second:>7s}")
    for key in parts[second]:
        label = PARTS.get(key, key)
        print(f"{label:72s} {parts[first][key]:7.2f} {parts[second][key]:7.2f}")


if __name__ == "__main__":
    main()
