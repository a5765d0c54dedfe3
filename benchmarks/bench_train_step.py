"""Seconds per training iteration with and without the teacher pass (same batch, same model).

    python benchmarks/bench_train_step.py [--config demo] [--size 128] [--batch 4] [--steps 30]
        [--amp off|bf16|fp16] [--channels-last] [--compile] [--set KEY=VALUE] [--json FILE]

Builds the detector of the config, feeds random 9-slice stacks with a few boxes, and times
(a) the student step alone (forward, backward, SGD, EMA update) and (b) the teacher pass
followed by the same student step. Prints both and the overhead; CPU unless CUDA is present.
``--amp`` runs both forwards under autocast as ``train.amp`` does (fp16 with a GradScaler);
``--json`` appends one line of figures to FILE (``benchmarks/gpu/check.sh`` reads them).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from uld.config import load_config
from uld.mining.ema import EMATeacher
from uld.mining.filter import mine
from uld.mining.policy import targets_for_student
from uld.model.build import build_detector
from uld.model.precision import Autocast, autocast, check_amp, grad_scaler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="demo")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="append the figures as one JSON line to this file")
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    name = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    device = torch.device(name)
    check_amp(args.amp, device, "--amp")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    student = build_detector(config.model, config.data.num_slices).to(device).train()
    if args.channels_last:
        student = student.to(memory_format=torch.channels_last)
    teacher = EMATeacher(student, config.mining.ema_momentum)
    if args.compile:
        student.backbone.compile(dynamic=True)
    predictor = Autocast(teacher.module, args.amp, device)
    scaler = grad_scaler(args.amp, device)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.001, momentum=0.9)
    images = [torch.rand(config.data.num_slices, args.size, args.size, device=device)
              for _ in range(args.batch)]
    s = args.size
    known = [torch.tensor([[0.2 * s, 0.2 * s, 0.35 * s, 0.35 * s]], device=device)
             for _ in range(args.batch)]

    def step(with_teacher: bool) -> None:
        mined = [torch.zeros((0, 4), device=device)] * args.batch
        if with_teacher:
            with torch.no_grad():
                preds = predictor(images)
            mined = [mine(p["boxes"], p["scores"], k, config.mining.tau,
                          config.mining.gt_nms_iou)[0] for p, k in zip(preds, known)]
        targets = [targets_for_student(k, m, "add") for k, m in zip(known, mined)]
        with autocast(args.amp, device):
            loss = sum(student(images, targets).values())
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        teacher.update(student)

    def timed(with_teacher: bool) -> float:
        for _ in range(3):
            step(with_teacher)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            step(with_teacher)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / args.steps

    without = timed(False)
    with_teacher = timed(True)
    print(f"device {device}, threads {torch.get_num_threads()}, config {config.name}, "
          f"backbone {config.model.backbone}, batch {args.batch}, {args.size}x{args.size}, "
          f"amp {args.amp}{', channels_last' if args.channels_last else ''}"
          f"{', compiled' if args.compile else ''}")
    print(f"student step alone:        {without:.4f} s/iteration")
    print(f"teacher pass + student:    {with_teacher:.4f} s/iteration")
    print(f"teacher overhead:          {100 * (with_teacher / without - 1):.1f} %")
    if args.json:
        row = {"config": config.name, "device": str(device), "batch": args.batch, "size": args.size,
               "amp": args.amp, "channels_last": args.channels_last, "compile": args.compile,
               "student_s": without, "with_teacher_s": with_teacher,
               "teacher_overhead": with_teacher / without - 1}
        with open(args.json, "a") as handle:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
