"""The training loop: a plain function you can read in one screen.

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
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import uld
from uld.atomic import write_text
from uld.config import Config, config_from_dict, config_to_dict, save_config, upgrade_saved_config
from uld.data.samples import KeySliceDataset, Sample, collate
from uld.data.slice_boxes import write_slice_boxes
from uld.data.sources import open_training_data
from uld.data.transforms import resize_image, scale_boxes
from uld.mining.diagnostics import MiningCounts
from uld.mining.ema import EMATeacher
from uld.mining.gallery import mined_gallery
from uld.mining.harvest import count_mining, harvest, mine_samples, mine_truth, profile_teacher
from uld.mining.policy import targets_for_student
from uld.model.build import build_detector
from uld.train.checkpoint import atomic_save, load_checkpoint, model_file, rng_state, set_rng_state
from uld.train.distributed import Context, batch_indices, context, resize_ratio
from uld.train.guard import (
    StopOnInterrupt,
    TrainingInterrupted,
    check_finite_loss,
    check_finite_weights,
)
from uld.train.logging import RunLogger
from uld.train.schedule import build_optimizer, learning_rate
from uld.train.validation import validate


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

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Records:
        return cls(
            best_ap=state["best_ap"], best_step=state["best_step"],
            mining=MiningCounts(*state["mining"]), teacher_seconds=state["teacher_seconds"],
            student_seconds=state["student_seconds"], timed_steps=state["timed_steps"],
        )


class StepBatches(torch.utils.data.Sampler):
    """Batches of indices for steps ``start .. stop - 1`` (see ``batch_indices``)."""

    def __init__(self, start: int, stop: int, size: int, batch: int, seed: int, ctx: Context):
        self.start, self.stop, self.size, self.batch, self.seed, self.ctx = (
            start, stop, size, batch, seed, ctx,
        )

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield batch_indices(
                step, self.size, self.batch, self.seed, self.ctx.rank, self.ctx.world_size
            )

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def student_batch(
    batch: list[Sample], mined: list[torch.Tensor], ratio: float, config: Config,
    device: torch.device | str = "cpu",
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """The student's view of a batch: every image resized by ``ratio``, and its known boxes,
    mined boxes and hard negatives (image frame) scaled alike and combined as the mining
    policy says."""
    resized, targets = [], []
    for sample, m in zip(batch, mined):
        out, sx, sy = resize_image(sample.image.to(device), ratio)
        resized.append(out)
        targets.append(targets_for_student(
            scale_boxes(sample.boxes.to(device), sx, sy), scale_boxes(m, sx, sy),
            config.mining.policy, config.mining.regress_mined,
            scale_boxes(sample.hard_negatives.to(device), sx, sy),
        ))
    return resized, targets


def _check_resumable(saved: dict[str, Any], config: Config, path: Path) -> None:
    current = config_to_dict(config)
    # an older uld saved fewer keys: compare with its config as today's code reads it
    stored = config_to_dict(config_from_dict(upgrade_saved_config(saved["config"])))
    differ = [
        f"{section}.{key}"
        for section, values in current.items() if isinstance(values, dict)
        for key, value in values.items()
        if stored.get(section, {}).get(key) != value and f"{section}.{key}" != "train.iterations"
    ]
    if differ:
        raise ValueError(f"{path}: cannot resume with a different config ({', '.join(differ)})")


def train(config: Config, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train a student/teacher pair on ``config.data.root``; returns the run summary.

    SIGINT stops the run after the step in progress, with ``last.pt`` saved, by raising
    :class:`uld.train.guard.TrainingInterrupted`; a NaN or infinite loss or weight raises
    :class:`uld.train.guard.NonFiniteError` and writes nothing non-finite.
    """
    with StopOnInterrupt() as stop:
        return _train(config, Path(out_dir), resume, progress, stop)


def _train(config: Config, out: Path, resume: bool, progress: bool, stop: StopOnInterrupt) -> dict:
    ctx = context(config.train.device)
    tc = config.train
    torch.manual_seed(tc.seed)
    random.seed(tc.seed)

    data = open_training_data(config.data)
    mining_on = config.mining.policy != "none"
    dataset = KeySliceDataset(
        data.store, data.labels, config.data, data.truth, source=data.source,
        hard_negatives=data.hard_negatives, complete=data.complete,
        context=mining_on and config.mining.consistency_neighbours > 0,
    )
    store = data.store

    student = build_detector(config.model, config.data.num_slices).to(ctx.device)
    teacher = EMATeacher(student, config.mining.ema_momentum, config.mining.ema_warmup)
    optimizer = build_optimizer(student.parameters(), tc.optimizer, tc.lr, tc.momentum,
                                tc.weight_decay)
    records, start, saved, saved_step = Records(), 0, None, None
    last_path = out / "last.pt"
    if resume:
        saved = load_checkpoint(last_path)
        _check_resumable(saved, config, last_path)
        student.load_state_dict(saved["student"])
        teacher.load_state_dict(saved["teacher"])
        optimizer.load_state_dict(saved["optimizer"])
        records, start = Records.from_state(saved["records"]), int(saved["step"])
        saved_step = start
    elif last_path.exists():
        raise FileExistsError(f"{out} already holds a run: pass --resume, or choose another --out")
    model = DistributedDataParallel(student) if ctx.world_size > 1 else student
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    logger = RunLogger(out, enabled=ctx.is_main)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=StepBatches(start, tc.iterations, len(dataset), tc.batch_size, tc.seed, ctx),
        collate_fn=collate, num_workers=tc.num_workers,
    )
    batches = iter(loader)  # draws from the global RNG: restore the saved state after this
    if saved is not None:
        set_rng_state(saved["rng"])
    bar = tqdm(total=tc.iterations, initial=start, desc=f"train {out.name}", unit="it",
               disable=not (progress and ctx.is_main), leave=False)
    val_gt = data.val
    done = start
    for step, batch in enumerate(batches, start=start):
        lr = learning_rate(step, tc.lr, tc.warmup_iterations, tc.lr_schedule, tc.iterations,
                           tc.lr_decay_at, tc.lr_decay_gamma)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        mining_now = mining_on and step >= config.mining.start_iteration
        mined = [torch.zeros((0, 4), device=ctx.device) for _ in batch]
        if mining_now:
            found = mine_truth(batch, config.mining, ctx.device) \
                if config.mining.source == "truth" \
                else mine_samples(teacher.module, batch, config.mining, ctx.device)
            mined = [b for b, _ in found]
        t1 = time.perf_counter()

        ratio = resize_ratio(step, tc.seed, *tc.resize_range)
        losses = model(*student_batch(batch, mined, ratio, config, ctx.device))
        loss = sum(losses.values())
        check_finite_loss(step, {**losses, "total": loss}, last_path, saved_step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        momentum = teacher.update(student)
        t2 = time.perf_counter()

        records.teacher_seconds += t1 - t0
        records.student_seconds += t2 - t1
        records.timed_steps += 1
        batch_counts = count_mining(batch, mined) if mining_now else MiningCounts()
        records.mining = records.mining + batch_counts
        done = step + 1
        bar.update(1)
        if done % tc.log_every == 0 or done == tc.iterations:
            logger.scalars(done, {
                **{f"loss/{k}": v for k, v in _floats(losses).items()},
                "loss/total": float(loss.detach()), "lr": lr, "ema/momentum": momentum,
                "mining/mined_per_batch": float(batch_counts.mined),
                "mining/mined_total": float(records.mining.mined),
                "mining/true_total": float(records.mining.true),
                "mining/missing_total": float(records.mining.missing),
                "mining/found_total": float(records.mining.found),
                "mining/precision": records.mining.precision,
                "mining/recall": records.mining.recall,
            })
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", mined=records.mining.mined)
        if ctx.is_main and val_gt and (done % tc.eval_every == 0 or done == tc.iterations):
            result = validate(teacher.module, store, val_gt, config, ctx.device)
            profile = profile_teacher(teacher.module, dataset, ctx.device)
            logger.scalars(done, {"val/ap": result.ap, "val/avg_sensitivity": result.avg,
                                  **(profile.scalars(config.mining.tau) if profile else {})})
            if result.ap > records.best_ap:
                check_finite_weights(done, [("teacher", teacher.module.state_dict())], last_path, saved_step)
                records.best_ap, records.best_step = result.ap, done
                atomic_save(model_file(teacher.module.state_dict(), config_to_dict(config), done,
                                       result.to_json()), out / "best.pt")
        if ctx.is_main and (done % tc.checkpoint_every == 0 or done == tc.iterations or stop.requested):
            check_finite_weights(done, [("student", student.state_dict()),
                                        ("teacher", teacher.state_dict())], last_path, saved_step)
            atomic_save({
                "student": student.state_dict(), "teacher": teacher.state_dict(),
                "optimizer": optimizer.state_dict(), "step": done, "rng": rng_state(),
                "config": config_to_dict(config), "records": records.state(),
                "version": uld.__version__,
            }, last_path)
            saved_step = done
        if stop.requested:
            bar.close()
            raise TrainingInterrupted(done, out)
    bar.close()
    stop.release()  # from here on Ctrl-C interrupts at once (last.pt holds the final step)
    if ctx.world_size > 1:  # every rank mined its own share of each global batch
        counts = torch.tensor(records.state()["mining"], dtype=torch.int64)
        torch.distributed.all_reduce(counts)
        records.mining = MiningCounts(*counts.tolist())
    summary = _summary(config, records, len(dataset), done)
    skipped = [*data.skipped, *dataset.skipped]
    summary["skipped_inputs"] = {"count": len(skipped), "first": skipped[:20], "all": "skipped.txt"}
    if ctx.is_main and mining_on:
        summary["final_teacher_mining"] = export_mined(teacher.module, dataset, config, out,
                                                       ctx.device, progress)
    if ctx.is_main:
        atomic_save(model_file(teacher.module.state_dict(), config_to_dict(config), summary["steps"],
                               {}), out / "model.pt")
        write_text(out / "skipped.txt", "".join(f"{m}\n" for m in skipped))
        write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    logger.close()
    if ctx.world_size > 1:  # leave together: a rank exiting early can abort the others (gloo)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return summary


def _floats(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in losses.items()}


MINED_PICKLE = "MinedLesions.pkl"
MINED_JSON = "mined_lesions.json"
MINED_GALLERY = "mined_lesions.png"


def export_mined(
    teacher: torch.nn.Module, dataset: KeySliceDataset, config: Config, out: Path,
    device: torch.device | str = "cpu", progress: bool = False,
) -> dict[str, Any]:
    """Mine the whole training set with the final teacher; write ``MinedLesions.pkl``,
    ``mined_lesions.json`` (``uld.data.slice_boxes``) and the gallery ``mined_lesions.png``.
    Returns the counts (precision and recall where the truth is known)."""
    mined, counts = harvest(teacher, dataset, config.mining, device,
                            config.infer.batch_size, progress)
    boxes = [b for m in mined for b in m.slice_boxes()]
    meta = {"tau": config.mining.tau, "gt_nms_iou": config.mining.gt_nms_iou,
            "policy": config.mining.policy, "training_slices": len(dataset)}
    write_slice_boxes(boxes, out / MINED_PICKLE, out / MINED_JSON, "mined_lesions", meta,
                      one_based=config.data.format == "deeplesion")
    mined_gallery(dataset, mined, config, out / MINED_GALLERY)
    return {
        "slices_searched": len(dataset), "slices_with_mined": len(mined), "mined": counts.mined,
        "mined_true": counts.true,
        "precision": None if counts.mined == 0 or counts.missing == 0 else counts.precision,
        "recall": None if counts.missing == 0 else counts.recall,
        "files": [MINED_PICKLE, MINED_JSON, MINED_GALLERY],
    }


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
