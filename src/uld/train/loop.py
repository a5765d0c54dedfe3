"""The training loop: a plain function you can read in one screen (:func:`train`).

It has the shape of detectron2's ``TrainerBase.train``: open the run, then for each step
:func:`train_step` (the algorithm: mining, one student step, the EMA update; no files, no
logging) followed by :func:`after_step` (records, logging, validation, checkpoints), then
finish the run.

Every step: the teacher (EMA of the student) predicts on the batch at ratio 1.0, its
confident boxes that overlap no known lesion are mined, the batch is resized for the student
by a random ratio (boxes with it), the student takes one SGD step on known + mined boxes (as
the mining policy says), and the teacher averages the student in. Periodically the teacher is
validated with the P3D protocol (best kept) and a complete checkpoint is written.

Files of a run folder: ``config.yaml`` (resolved config), ``last.pt`` (resume), ``best.pt``
(best validated teacher), ``model.pt`` (final teacher, written last), ``metrics.jsonl`` and
``tensorboard/`` (scalars), ``summary.json``, ``skipped.txt`` (one line per input that
``data.on_bad_input: skip`` left out) and, for mining runs, the final teacher's mined lesions
over the training set: ``MinedLesions.pkl``, ``mined_lesions.json`` and ``mined_lesions.png``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from uld.atomic import write_text
from uld.config import SPEED_ONLY, Config, config_differences, config_to_dict, save_config
from uld.data.samples import KeySliceDataset, Sample, collate
from uld.data.sources import TrainingData, open_training_data
from uld.data.transforms import flip_boxes, resize_image, scale_boxes
from uld.mining.diagnostics import MiningCounts
from uld.mining.ema import EMATeacher
from uld.mining.export import export_mined
from uld.mining.harvest import count_mining, mine_samples, mine_truth, profile_teacher
from uld.mining.policy import targets_for_student
from uld.model.build import build_detector
from uld.model.precision import Autocast, autocast, check_amp, device_habits, grad_scaler
from uld.train.checkpoint import atomic_save, load_checkpoint, model_file, resume_file, set_rng_state
from uld.train.dataloader import make_loader, worker_count
from uld.train.distributed import (
    Context,
    batch_indices,
    context,
    flip_draws,
    local_world_size,
    resize_ratio,
)
from uld.train.guard import FiniteGuard, StopOnInterrupt, TrainingInterrupted
from uld.train.logging import RunLogger
from uld.train.schedule import build_optimizer, learning_rate
from uld.train.validation import validate


def train(config: Config, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train a student/teacher pair on ``config.data.root``; returns the run summary.

    SIGINT stops the run after the step in progress, with ``last.pt`` saved, by raising
    :class:`uld.train.guard.TrainingInterrupted`; a NaN or infinite loss or weight raises
    :class:`uld.train.guard.NonFiniteError` and writes nothing non-finite.
    """
    with StopOnInterrupt() as stop:
        run = open_run(config, Path(out_dir), resume, progress, stop)
        for step, batch in enumerate(run.batches, start=run.start):
            result = train_step(step, batch, run.model, run.teacher, run.optimizer, config,
                                run.ctx.device, run.guard, run.scaler)
            after_step(run, result)
        return finish(run)


@dataclass(frozen=True)
class StepResult:
    """What one training step did. losses: each loss of the student (floats); loss: their sum;
    lr: the learning rate it used; ema_momentum: the teacher's averaging weight; mining: the
    batch's mining counts (zero when not mining); seconds spent mining and in the student step."""

    step: int
    losses: dict[str, float]
    loss: float
    lr: float
    ema_momentum: float
    mining: MiningCounts
    teacher_seconds: float
    student_seconds: float


def train_step(
    step: int, batch: list[Sample], model: nn.Module, teacher: EMATeacher,
    optimizer: torch.optim.Optimizer, config: Config, device: torch.device | str = "cpu",
    guard: FiniteGuard | None = None, scaler: torch.amp.GradScaler | None = None,
) -> StepResult:
    """One step of the method on ``batch``: the teacher mines (from ``mining.start_iteration``
    on, unless ``mining.policy`` is ``none``), the student (``model``, DDP-wrapped or not)
    takes one optimiser step on the known and mined boxes at this step's resize ratio, and the
    teacher averages the student in. ``guard`` stops a non-finite loss before the step.

    ``train.amp``: the teacher's pass and the student's forward run under autocast; the
    backward and the optimiser step stay fp32 (through ``scaler``, a ``GradScaler``, for
    fp16). The losses come to the host once per step, for the guard and the records."""
    tc = config.train
    host_batch = batch  # the mining diagnostics compare on the host
    batch = [sample.to(device, non_blocking=True) for sample in batch]  # pinned: asynchronous
    lr = learning_rate(step, tc.lr, tc.warmup_iterations, tc.lr_schedule, tc.iterations,
                       tc.lr_decay_at, tc.lr_decay_gamma)
    for group in optimizer.param_groups:
        group["lr"] = lr
    t0 = time.perf_counter()
    mining_now = config.mining.policy != "none" and step >= config.mining.start_iteration
    mined = [torch.zeros((0, 4), device=device) for _ in batch]
    uncertain = None
    if mining_now and config.mining.source == "truth":
        mined = [b for b, _ in mine_truth(batch, config.mining, device)]
    elif mining_now:
        mc = config.mining
        found = mine_samples(Autocast(teacher.module, teacher_amp(config), device), batch, mc, device,
                             floor=mc.ignore_low)
        mined = [b[s >= mc.tau] for b, s in found]
        if mc.ignore_low < mc.tau:
            uncertain = [b[s < mc.tau] for b, s in found]
    t1 = time.perf_counter()

    ratio = resize_ratio(step, tc.seed, *tc.resize_range)
    flips = flip_draws(step, tc.seed, len(batch), tc.hflip)
    with autocast(tc.amp, device):
        losses = model(*student_batch(batch, mined, ratio, config, device, uncertain=uncertain,
                                      flips=flips))
    loss = sum(losses.values())
    # the one host sync of the step's losses: the guard and the records read the same floats
    values = dict(zip([*losses, "total"],
                      torch.stack([v.detach().float() for v in [*losses.values(), loss]]).tolist()))
    (guard or FiniteGuard(Path("last.pt"))).loss(step, values)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    momentum = teacher.update(model)
    t2 = time.perf_counter()
    total = values.pop("total")
    return StepResult(
        step=step, losses=values, loss=total, lr=lr, ema_momentum=momentum,
        mining=count_mining(host_batch, mined) if mining_now else MiningCounts(),
        teacher_seconds=t1 - t0, student_seconds=t2 - t1,
    )


def teacher_amp(config: Config) -> str:
    """The mining pass's precision: ``mining.teacher_amp``, or ``train.amp`` for ``train``."""
    mode = config.mining.teacher_amp
    return config.train.amp if mode == "train" else mode


@dataclass
class Run:
    """What a run holds from :func:`open_run` to :func:`finish`. ``model`` is the student,
    wrapped in DDP when distributed; ``done`` counts the steps finished."""

    config: Config
    out: Path
    ctx: Context
    data: TrainingData
    dataset: KeySliceDataset
    student: nn.Module
    model: nn.Module
    teacher: EMATeacher
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    records: Records
    guard: FiniteGuard
    logger: RunLogger
    bar: tqdm
    batches: Iterator[list[Sample]]
    start: int
    stop: StopOnInterrupt
    progress: bool
    done: int


def open_run(config: Config, out: Path, resume: bool, progress: bool, stop: StopOnInterrupt) -> Run:
    """Seed, read the data, build the student, teacher and optimiser (from ``last.pt`` when
    resuming), write ``config.yaml`` and start the batches where the run left off."""
    ctx = context(config.train.device)
    tc = config.train
    check_amp(tc.amp, ctx.device, "train.amp")
    check_amp(teacher_amp(config), ctx.device, "mining.teacher_amp")
    check_amp(config.infer.amp, ctx.device, "infer.amp")
    device_habits(ctx.device, tc.cudnn_benchmark)
    torch.manual_seed(tc.seed)
    random.seed(tc.seed)

    data = open_training_data(config.data)
    dataset = KeySliceDataset(
        data.store, data.labels, config.data, data.truth, source=data.source,
        hard_negatives=data.hard_negatives, complete=data.complete,
        context=config.mining.policy != "none" and config.mining.consistency_neighbours > 0,
    )
    student = build_detector(config.model, config.data.num_slices).to(ctx.device)
    if tc.channels_last:
        student = student.to(memory_format=torch.channels_last)
    teacher = EMATeacher(student, config.mining.ema_momentum, config.mining.ema_warmup)
    if tc.compile:  # in place (state-dict keys unchanged), after the teacher's deep copy
        student.backbone.compile(dynamic=True)
    optimizer = build_optimizer(student.parameters(), tc.optimizer, tc.lr, tc.momentum,
                                tc.weight_decay)
    scaler = grad_scaler(tc.amp, ctx.device)
    records, start, saved = Records(), 0, None
    guard = FiniteGuard(out / "last.pt")
    if resume:
        saved = load_checkpoint(guard.last_checkpoint)
        _check_resumable(saved, config, guard.last_checkpoint)
        student.load_state_dict(saved["student"])
        teacher.load_state_dict(saved["teacher"])
        optimizer.load_state_dict(saved["optimizer"])
        if "scaler" in saved:
            scaler.load_state_dict(saved["scaler"])
        records, start = Records.from_state(saved["records"]), int(saved["step"])
        guard.checkpoint_step = start
    elif guard.last_checkpoint.exists():
        raise FileExistsError(f"{out} already holds a run: pass --resume, or choose another --out")
    model = DistributedDataParallel(student) if ctx.world_size > 1 else student
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    logger = RunLogger(out, enabled=ctx.is_main)
    workers = worker_count(config.data.num_workers, config.data.cache_volumes, local_world_size())
    loader = make_loader(
        dataset, StepBatches(start, tc.iterations, len(dataset), tc.batch_size, tc.seed, ctx,
                             dataset.key_items, config.data.unlabeled_neighbours_from),
        collate, workers, config.data.prefetch_factor, ctx.device,
    )
    batches = iter(loader)  # draws from the global RNG: restore the saved state after this
    if saved is not None:
        set_rng_state(saved["rng"])
    bar = tqdm(total=tc.iterations, initial=start, desc=f"train {out.name}", unit="it",
               disable=not (progress and ctx.is_main), leave=False)
    return Run(config, out, ctx, data, dataset, student, model, teacher, optimizer, scaler, records,
               guard, logger, bar, batches, start, stop, progress, done=start)


def after_step(run: Run, result: StepResult) -> None:
    """Count, log every ``train.log_every`` steps, validate every ``train.eval_every`` (keeping
    ``best.pt``), write ``last.pt`` every ``train.checkpoint_every``; stop on Ctrl-C."""
    tc, records = run.config.train, run.records
    records.add(result)
    run.done = done = result.step + 1
    run.bar.update(1)
    if done % tc.log_every == 0 or done == tc.iterations:
        run.logger.scalars(done, {
            **{f"loss/{k}": v for k, v in result.losses.items()},
            "loss/total": result.loss, "lr": result.lr, "ema/momentum": result.ema_momentum,
            "mining/mined_per_batch": float(result.mining.mined),
            "mining/mined_total": float(records.mining.mined),
            "mining/true_total": float(records.mining.true),
            "mining/missing_total": float(records.mining.missing),
            "mining/found_total": float(records.mining.found),
            "mining/precision": records.mining.precision,
            "mining/recall": records.mining.recall,
        })
        run.bar.set_postfix(loss=f"{result.loss:.3f}", mined=records.mining.mined)
    if run.ctx.is_main and run.data.val and (done % tc.eval_every == 0 or done == tc.iterations):
        _validate(run)
    if run.ctx.is_main and (done % tc.checkpoint_every == 0 or done == tc.iterations
                            or run.stop.requested):
        run.guard.weights(done, [("student", run.student.state_dict()),
                                 ("teacher", run.teacher.state_dict())])
        atomic_save(resume_file(run.student.state_dict(), run.teacher.state_dict(),
                                run.optimizer.state_dict(), done, config_to_dict(run.config),
                                records.state(), run.scaler), run.guard.last_checkpoint)
        run.guard.checkpoint_step = done
    if run.stop.requested:
        run.bar.close()
        raise TrainingInterrupted(done, run.out)


def _validate(run: Run) -> None:
    """P3D on the validation set and the teacher's score profile on training slices, logged;
    ``best.pt`` when the AP is the best so far."""
    config, teacher, done = run.config, run.teacher.module, run.done
    result = validate(teacher, run.data.store, run.data.val, config, run.ctx.device)
    profile = profile_teacher(teacher, run.dataset, run.ctx.device)
    run.logger.scalars(done, {"val/ap": result.ap, "val/avg_sensitivity": result.avg,
                              **(profile.scalars(config.mining.tau) if profile else {})})
    if result.ap > run.records.best_ap:
        run.guard.weights(done, [("teacher", teacher.state_dict())])
        run.records.best_ap, run.records.best_step = result.ap, done
        atomic_save(model_file(teacher.state_dict(), config_to_dict(config), done, result.to_json()),
                    run.out / "best.pt")


def finish(run: Run) -> dict:
    """Write the final teacher (``model.pt``), its mined lesions (mining runs), ``skipped.txt``
    and ``summary.json``; returns the summary."""
    config, ctx, out = run.config, run.ctx, run.out
    run.bar.close()
    run.stop.release()  # from here on Ctrl-C interrupts at once (last.pt holds the final step)
    if ctx.world_size > 1:  # every rank mined its own share of each global batch
        counts = torch.tensor(run.records.state()["mining"], dtype=torch.int64)
        torch.distributed.all_reduce(counts)
        run.records.mining = MiningCounts(*counts.tolist())
    summary = _summary(config, run.records, len(run.dataset), run.done)
    skipped = [*run.data.skipped, *run.dataset.skipped]
    summary["skipped_inputs"] = {"count": len(skipped), "first": skipped[:20], "all": "skipped.txt"}
    if ctx.is_main and config.mining.policy != "none":
        summary["final_teacher_mining"] = export_mined(run.teacher.module, run.dataset, config, out,
                                                       ctx.device, run.progress)
    if ctx.is_main:
        atomic_save(model_file(run.teacher.module.state_dict(), config_to_dict(config),
                               summary["steps"], {}), out / "model.pt")
        write_text(out / "skipped.txt", "".join(f"{m}\n" for m in skipped))
        write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    run.logger.close()
    if ctx.world_size > 1:  # leave together: a rank exiting early can abort the others (gloo)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return summary


@dataclass
class Records:
    """What the loop keeps between steps (saved in ``last.pt``)."""

    best_ap: float = -1.0
    best_step: int = -1
    mining: MiningCounts = field(default_factory=MiningCounts)
    teacher_seconds: float = 0.0
    student_seconds: float = 0.0
    timed_steps: int = 0

    def state(self) -> dict[str, Any]:
        m = self.mining
        return {
            "best_ap": self.best_ap, "best_step": self.best_step,
            "mining": [m.mined, m.true, m.missing, m.found],
            "teacher_seconds": self.teacher_seconds, "student_seconds": self.student_seconds,
            "timed_steps": self.timed_steps,
        }

    def add(self, step: StepResult) -> None:
        self.teacher_seconds += step.teacher_seconds
        self.student_seconds += step.student_seconds
        self.timed_steps += 1
        self.mining = self.mining + step.mining

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Records:
        return cls(
            best_ap=state["best_ap"], best_step=state["best_step"],
            mining=MiningCounts(*state["mining"]), teacher_seconds=state["teacher_seconds"],
            student_seconds=state["student_seconds"], timed_steps=state["timed_steps"],
        )



class StepBatches(torch.utils.data.Sampler):
    """Batches of indices for steps ``start .. stop - 1`` (see ``batch_indices``): from all
    ``size`` items from step ``all_from`` on, from the first ``early_size`` before it (the key
    slices, while ``data.unlabeled_neighbours_from`` holds their neighbours back)."""

    def __init__(self, start: int, stop: int, size: int, batch: int, seed: int, ctx: Context,
                 early_size: int | None = None, all_from: int = 0):
        self.start, self.stop, self.size, self.batch, self.seed, self.ctx = (
            start, stop, size, batch, seed, ctx,
        )
        self.early_size = size if early_size is None else early_size
        self.all_from = all_from

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            size = self.size if step >= self.all_from else self.early_size
            yield batch_indices(
                step, size, self.batch, self.seed, self.ctx.rank, self.ctx.world_size
            )

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def student_batch(
    batch: list[Sample], mined: list[torch.Tensor], ratio: float, config: Config,
    device: torch.device | str = "cpu", uncertain: list[torch.Tensor] | None = None,
    flips: list[bool] | None = None,
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """The student's view of a batch: every image resized by ``ratio`` and mirrored left-right
    where ``flips`` says, and its known boxes, mined boxes, uncertain boxes (the ignore band),
    nearby boxes (``data.unlabeled_neighbours``) and hard negatives (image frame) moved alike
    and combined as the mining policy says."""
    resized, targets = [], []
    for i, (sample, m) in enumerate(zip(batch, mined)):
        out, sx, sy = resize_image(sample.image.to(device), ratio)
        flip = bool(flips and flips[i])
        if flip:
            out = out.flip(-1)
        place = partial(_moved, sx=sx, sy=sy, flip_width=out.shape[-1] if flip else None,
                        device=device)
        resized.append(out)
        targets.append(targets_for_student(
            place(sample.boxes), place(m), config.mining.policy, config.mining.regress_mined,
            place(sample.hard_negatives), None if uncertain is None else place(uncertain[i]),
            place(sample.nearby) if len(sample.nearby) else None, sample.background,
        ))
    return resized, targets


def _moved(boxes: torch.Tensor, sx: float, sy: float, flip_width: float | None,
           device: torch.device | str) -> torch.Tensor:
    """Boxes (Tensor[N, 4]) of a sample in the student's image: scaled, then mirrored in an
    image ``flip_width`` pixels wide (None: not mirrored)."""
    boxes = scale_boxes(boxes.to(device), sx, sy)
    return boxes if flip_width is None else flip_boxes(boxes, flip_width)


def _check_resumable(saved: dict[str, Any], config: Config, path: Path) -> None:
    # a resumed run may change its length and the settings that change only speed
    differ = config_differences(saved["config"], config, SPEED_ONLY | {"train.iterations"})
    if differ:
        raise ValueError(f"{path}: cannot resume with a different config ({', '.join(differ)})")


def _summary(config: Config, records: Records, n_samples: int, steps: int) -> dict:
    timed = max(records.timed_steps, 1)
    m = records.mining
    return {
        "steps": steps,
        "training_samples": n_samples,
        "policy": config.mining.policy,
        "best_val_ap": records.best_ap if records.best_step >= 0 else None,
        "best_step": records.best_step if records.best_step >= 0 else None,
        "mined": m.mined,
        "mined_true": m.true,
        "mined_precision": None if m.mined == 0 else m.precision,
        "missing_lesions_seen": m.missing,
        "missing_lesions_found": m.found,
        "mined_recall": None if m.missing == 0 else m.recall,
        "seconds_per_step_teacher": records.teacher_seconds / timed,
        "seconds_per_step_student": records.student_seconds / timed,
    }
