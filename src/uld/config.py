"""One typed configuration tree for every run.

YAML file -> nested dataclasses -> ``--set section.key=value`` overrides -> frozen ``Config``.
Every field has a default here, and the defaults are the paper's published settings
(``docs/method.md``); other presets (``demo``, ...) live in ``uld/configs/*.yaml``
and only list what they change. Unknown keys are errors that name the key. The resolved
config is written into every run folder and every checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from uld.atomic import write_text
from uld.config_ranges import range_problem
from uld.messages import decode_error

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how a 2.5D sample is built from it."""

    format: Literal["folder", "deeplesion"] = "folder"
    """``folder``: the generic dataset format v1 (README); ``deeplesion``: a DeepLesion tree
    (``Images_png/``, ``DL_info.csv``) with the Lesion Harvester annotation files."""
    root: str = ""
    """Dataset folder (either format)."""
    annotations: str = "annotations.csv"
    """Boxes the student is trained on (relative to ``root``); ``annotations_full.csv`` = oracle."""
    truth: str = "annotations_full.csv"
    """Complete labels for mining diagnostics, if the file exists (synthetic data has it)."""
    num_slices: int = 9
    """Slices in the 2.5D stack (odd); the centre one is the annotated slice."""
    slice_spacing_mm: float = 2.0
    """Distance between neighbouring slices of the stack, by linear interpolation."""
    window_hu: tuple[float, float] = (-1024.0, 3071.0)
    """Intensity window mapped linearly to [0, 1]."""
    pixel_spacing_mm: float = 0.8
    """Slices are resampled in-plane to this pixel size (boxes alike); 0 keeps the scan's."""
    max_size: int = 512
    """Longer side of a resampled slice at most this many pixels (0: no cap)."""
    body_crop: bool = False
    """Crop each slice to the body (HU > -768 after an opening) before resampling (MULAN)."""
    on_bad_input: Literal["stop", "skip"] = "stop"
    """A bad row, file or box: ``stop`` the run with its message, or ``skip`` it (counted and
    reported in the run summary)."""
    dl_info: str = "DL_info.csv"
    """DeepLesion: the lesion table, relative to ``root`` (or absolute)."""
    harvester_dir: str = "lesion_harvester"
    """DeepLesion: folder of Lesion Harvester's ``Revised-*.pkl`` files, relative to ``root``
    (or absolute): the fully annotated validation, test and hard-negative sub-volumes."""
    drop_noisy: bool = True
    """DeepLesion: leave out lesions marked ``Possibly_noisy`` (as MULAN and Lesion Harvester)."""
    unlabeled_neighbours: int = 0
    """Also train on the slices up to this many slices from each labeled key slice, which carry
    no labels of their own (DeepLesion labels only key slices), so that mining can reach the
    unlabeled lesions that cross no key slice. Each key slice is drawn about as often as all of
    its neighbours together. On every sample, the boxes labeled on slices within this distance
    (a labeled lesion most likely crosses this slice too) are kept out of the background and
    out of mining. 0 = key slices only (the paper)."""
    unlabeled_neighbours_from: int = 0
    """The step from which the unlabeled neighbours (``unlabeled_neighbours``) join; before it,
    batches hold key slices only, as without them. A teacher that has not learned the labeled
    lesions yet mines nothing on those slices, so until then they only teach background."""
    hard_negatives: str = ""
    """Hard-negative retraining (P-): a ``hard_negatives.json`` written by ``uld mine-negatives``.
    When set, the fully annotated ``negatives`` volumes join the training set with all their
    labels (no mining on them) and every listed box is forced into the background samples."""
    cache_volumes: bool = True
    """Keep every decoded volume in memory (fine for the synthetic benchmark)."""
    num_workers: int = -1
    """DataLoader worker processes building samples beside the training process. -1: what
    the machine allows: 0 with ``cache_volumes`` (volumes already in memory; each worker
    would decode them all again), else this process's share of the cores minus one, at most
    16. A number above the cores is capped, with a warning."""
    prefetch_factor: int = 2
    """Batches each worker prepares ahead (torch's default); workers persist for the run."""


@dataclass(frozen=True)
class ModelConfig:
    """Faster R-CNN parts; see ``uld.model.build``."""

    backbone: Literal["small", "densenet121"] = "densenet121"
    pretrained: str = "imagenet"
    """DenseNet-121 start: ``imagenet`` = torchvision's ImageNet weights from the torch cache
    (``~/.cache/torch/hub/checkpoints/densenet121-a639ec97.pth``), a path = that state dict,
    ``''`` = random initialisation. A missing file stops the run (never a silent random start)."""
    small_channels: tuple[int, ...] = (32, 64, 128, 128)
    small_norm: Literal["group", "batch"] = "group"
    """Normalisation in the small backbone's conv blocks."""
    out_channels: int = 512
    """Channels of the feature map the RPN and RoI head see (a 1x1 projection of the trunk)."""
    anchor_sizes: tuple[int, ...] = (16, 24, 32, 48, 96)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    representation_size: int = 1024
    roi_sampling_ratio: int = 2
    """RoIAlign samples per bin side (torchvision's default 2; 1 is 4x cheaper on CPU)."""
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    soft_sampling_floor: float = 1.0
    """Soft Sampling (Wu et al., BMVC 2019), a follow-up switch against missing labels: the RoI
    head's background proposals far from every known box (labeled or mined) weigh this much in
    the classification loss, rising to 1 with their overlap with one
    (``uld.model.sampling.soft_sampling_weights``). 1 = off (the paper)."""
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_img: int = 100
    image_mean: float = 0.5
    image_std: float = 0.25


@dataclass(frozen=True)
class MiningConfig:
    """Mean-teacher lesion mining (docs/method.md, 'The framework'; README, 'Mining settings')."""

    policy: Literal["none", "add", "ignore"] = "add"
    """``add``: mined boxes become foreground; ``ignore``: anchors and proposals on them leave
    the classification loss; ``none``: no mining (the EMA teacher is still trained)."""
    tau: float = 0.9
    """Teacher score at or above which a box is mined."""
    gt_nms_iou: float = 0.7
    """Teacher boxes overlapping a known box above this IoU are dropped."""
    gt_contain: float = 1.0
    """Also drop teacher boxes whose intersection with a known box exceeds this share of the
    smaller box's area (1 = off, the paper's GT NMS by IoU alone): a part of a known lesion,
    or a box around it, is not a new lesion."""
    regress_mined: bool = True
    """Under ``add``, mined boxes also get box-regression targets (the paper does not say)."""
    ema_momentum: float = 0.999
    """teacher = m * teacher + (1 - m) * student; MMDetection's MeanTeacherHook(momentum=1-m)."""
    ema_warmup: bool = False
    """Ramp the momentum as min(1 - 1/(t + 1), m) (mean-teacher paper); off in the paper."""
    start_iteration: int = 0
    """Supervised burn-in: no mining before this iteration (the EMA runs from the start)."""
    consistency_neighbours: int = 0
    """3D consistency filter: a mined box is kept only when the teacher also finds it (IoU >=
    ``consistency_iou``, score >= ``consistency_score``) on this many of the two stacks
    centred one stack spacing above and below (0 = off, 1 = either, 2 = both)."""
    consistency_score: float = 0.5
    consistency_iou: float = 0.5
    source: Literal["teacher", "truth"] = "teacher"
    """``teacher``: the method. ``truth``: every unlabeled true lesion of the slice is "mined"
    (after the same GT NMS), as a perfect teacher would mine it: the upper bound of what mining
    can recover, for data whose complete labels are known (the synthetic benchmark)."""
    ignore_low: float = 1.0
    """Lower end of the ignore band: teacher boxes scoring in [``ignore_low``, ``tau``) that
    pass GT NMS leave the background (their anchors and proposals are taken out of the
    classification loss, as under ``ignore``), whatever the policy does with the boxes >=
    ``tau``. A hard-threshold form of Soft Teacher's background weighting (Xu et al., ICCV
    2021): a lesion the teacher is unsure of is not taught as background while its score can
    still rise to ``tau``. >= ``tau`` = off (the paper)."""
    teacher_amp: Literal["train", "off", "bf16", "fp16"] = "train"
    """Mixed precision of the teacher's mining pass alone: ``train`` = as ``train.amp``. The
    teacher only ranks boxes against ``tau``, so it may run at lower precision than the student
    trains (bf16 on a CPU: the pass about 0.7x as long, benchmarks/RESULTS.md); its boxes come
    back fp32."""
    contain_thresh: float = 1.0
    """Before GT NMS: drop a teacher box whose intersection with a higher-scoring teacher box,
    over the smaller box's area, exceeds this (as ``infer.contain_thresh``); 1 = off."""
    contain_area_ratio: float = 0.0
    """Size guard of that suppression (as ``infer.contain_area_ratio``)."""

    def __post_init__(self) -> None:
        for name in ("contain_thresh", "contain_area_ratio", "ignore_low"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"mining.{name} = {getattr(self, name)}: must lie in [0, 1]")
        if not 0.0 <= self.tau <= 1.0:
            raise ConfigError(f"mining.tau = {self.tau}: must lie in [0, 1]")
        if not 0.0 <= self.gt_nms_iou <= 1.0:
            raise ConfigError(f"mining.gt_nms_iou = {self.gt_nms_iou}: must lie in [0, 1]")
        if not 0.0 <= self.gt_contain <= 1.0:
            raise ConfigError(f"mining.gt_contain = {self.gt_contain}: must lie in [0, 1]")
        if self.source not in ("teacher", "truth"):
            raise ConfigError(f"mining.source = {self.source!r}: must be 'teacher' or 'truth'")
        if self.consistency_neighbours not in (0, 1, 2):
            raise ConfigError(f"mining.consistency_neighbours = {self.consistency_neighbours}: "
                              "must be 0, 1 or 2")


@dataclass(frozen=True)
class TrainConfig:
    """The optimiser and the loop."""

    iterations: int = 80_000
    batch_size: int = 2
    """Images per optimiser step on one process."""
    optimizer: Literal["sgd", "adamw"] = "sgd"
    """``sgd`` (the paper's) or ``adamw`` (decoupled weight decay; ``momentum`` unused), which
    trains a randomly initialised CPU detector in fewer steps."""
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iterations: int = 500
    """Linear warm-up from lr/10; then the ``lr_schedule``."""
    lr_schedule: Literal["constant", "step"] = "constant"
    """``constant`` (the paper's choice) or ``step``: multiply by ``lr_decay_gamma`` at each
    fraction ``lr_decay_at`` of ``iterations`` (the paper's decay ablation)."""
    lr_decay_at: tuple[float, ...] = (0.75, 0.9)
    lr_decay_gamma: float = 0.1
    resize_range: tuple[float, float] = (0.8, 1.2)
    """Student random resize ratio; the teacher always sees ratio 1.0."""
    hflip: float = 0.0
    """Probability that a student image is mirrored left-right, its boxes with it (MMDetection's
    ``RandomFlip``); the teacher mines on the image as it is. 0 = off (the paper states no
    flipping)."""
    eval_every: int = 2_000
    checkpoint_every: int = 2_000
    log_every: int = 20
    seed: int = 0
    device: str = "auto"
    """'auto' = CUDA when available, else CPU."""
    amp: Literal["off", "bf16", "fp16"] = "off"
    """Mixed precision of the student's forward and the teacher's pass: ``bf16`` (CPU, or a
    GPU with bf16), ``fp16`` (CUDA only; with a gradient scaler). Weights, the optimiser and
    the EMA stay fp32."""
    compile: bool = False
    """``torch.compile`` the backbone (its state dict keeps its keys). Off: on the CPU it did
    not pay (benchmarks/RESULTS.md, issue 12)."""
    channels_last: bool = False
    """Student and teacher in the channels-last memory format (pays with AMP on tensor cores)."""
    cudnn_benchmark: bool = False
    """CUDA only: let cuDNN pick the fastest convolution per input shape."""


@dataclass(frozen=True)
class KalmanLinkerParams:
    """Parameters of :func:`link_kalman`; lengths are pixels, steps are slices.

    Noise standard deviations are fractions of the track's size ``s = sqrt(w h)`` (pixels per
    slice for the process and velocity entries), see the module docstring.
    """

    max_gap: int = 1
    """Missed slices a track may bridge: it is closed when its last box lies more than
    ``max_gap + 1`` slices behind the current one (same meaning as in ``link_by_iou``)."""
    gate: float = 13.28
    """Largest squared Mahalanobis distance of a pair (99 % of chi-square, 4 degrees)."""
    pos_measure_std: float = 0.1
    """Measurement noise of the box centre, fraction of ``s``."""
    size_measure_std: float = 0.1
    """Measurement noise of the box width and height, fraction of ``s``."""
    pos_process_std: float = 0.05
    """Random change of the centre per slice beyond the constant velocity, fraction of ``s``."""
    size_process_std: float = 0.1
    """Random change of width and height per slice beyond the trend, fraction of ``s``
    (larger than the centre's: a blob's cross-section changes fast near its ends)."""
    vel_process_std: float = 0.05
    """Random change of each velocity per slice, fraction of ``s`` per slice."""
    init_vel_std: float = 0.05
    """Standard deviation of a new track's (zero) velocities, fraction of ``s`` per slice."""
    min_size_px: float = 4.0
    """Width and height are floored at this when forming ``s`` (tiny boxes keep some slack)."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_gap, (int, np.integer)) or self.max_gap < 0:
            raise ValueError(f"KalmanLinkerParams.max_gap = {self.max_gap!r}: must be an integer >= 0")
        for name in ("gate", "pos_measure_std", "size_measure_std", "init_vel_std", "min_size_px"):
            if not getattr(self, name) > 0:
                raise ValueError(f"KalmanLinkerParams.{name} = {getattr(self, name)!r}: must be > 0")
        for name in ("pos_process_std", "size_process_std", "vel_process_std"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"KalmanLinkerParams.{name} = {getattr(self, name)!r}: must be >= 0")


@dataclass(frozen=True)
class OverlapLinkerParams:
    """Settings of :func:`link_by_iou` (``infer.overlap`` in the config)."""

    iou_threshold: float = 0.3
    """A box joins a track when its IoU with the track's last box reaches this."""
    max_gap: int = 1
    """Slices a track may miss and still continue."""


@dataclass(frozen=True)
class InferConfig:
    """Volume -> 2D detections -> 3D tracklets."""

    batch_size: int = 16
    """Slices per forward pass."""
    amp: Literal["off", "bf16", "fp16"] = "off"
    """Mixed precision of the detector's forward (as ``train.amp``); boxes come back fp32."""
    linker: Literal["kalman", "overlap"] = "kalman"
    """How 2D boxes become 3D lesions: a Kalman filter per track (``uld.infer.kalman``, the
    paper's choice; design in docs/linking.md) or the simple overlap linker (``uld.infer.link``)."""
    kalman: KalmanLinkerParams = field(default_factory=KalmanLinkerParams)
    """Kalman linker: bridged gap, gate, noise, size floor."""
    overlap: OverlapLinkerParams = field(default_factory=OverlapLinkerParams)
    """Overlap linker: IoU threshold and bridged gap."""
    contain_thresh: float = 1.0
    """Per slice, before linking: drop a box whose intersection with a higher-scoring box,
    over the smaller box's area, exceeds this (``uld.infer.suppress``); 1 = off (the default:
    with ``merge_thresh`` on, it lowered AP on the validation split)."""
    contain_area_ratio: float = 0.1
    """Size guard of both suppressions: a pair counts as duplicates only when the smaller box
    (tracklet) has at least this share of the larger one's area (a lesion inside an
    organ-sized false box is not its duplicate)."""
    merge_thresh: float = 0.3
    """After linking: merge a tracklet into a higher-scoring one when their summed intersection
    over the smaller summed area, on common slices (or on the facing ends across a gap),
    exceeds this; 1 = off. 0.3 chosen on the synthetic validation split (docs/linking.md)."""
    merge_gap: int = 1
    """Missed slices across which two tracklets may continue each other and be merged."""
    trim_thresh: float = 0.0
    """After merging: drop a lesion's end boxes while their score is below this share of its best
    score (``uld.infer.suppress.trim_tracklet_ends``); 0 = off (the default: on the test split
    0.15 raised purity by 0.02-0.03 and cost 0.13-0.14 AP, docs/linking.md)."""
    smooth_slices: int = 0
    """Last: each lesion box's centre and size become the score- and distance-weighted mean over
    the lesion's boxes within this many slices (``uld.infer.smooth``); 0 = off (the default: 1,
    the validation split's choice, raised purity on the test split too but not AP,
    docs/linking.md)."""
    smooth_ends: int = 0
    """With ``smooth_slices`` on: smooth only this many boxes at each end of a lesion, where the
    loosely placed boxes lie, and leave its inner ones as detected; 0 = every box. 1 gave nearly
    the purity of smoothing every box at a tenth of its cost in AP (docs/linking.md)."""

    def __post_init__(self) -> None:
        for name in ("contain_thresh", "contain_area_ratio", "merge_thresh", "trim_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"infer.{name} = {getattr(self, name)}: must lie in [0, 1]")
        for name in ("merge_gap", "smooth_slices", "smooth_ends"):
            if getattr(self, name) < 0:
                raise ConfigError(f"infer.{name} = {getattr(self, name)}: must be >= 0")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation protocol used for validation during training."""

    iou: float = 0.5


@dataclass(frozen=True)
class Config:
    """The whole run."""

    name: str = "paper"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


class ConfigError(ValueError):
    """A config file or override that does not fit the tree."""


class _Loader(yaml.SafeLoader):
    """YAML 1.1 as PyYAML reads it, except that ``1e6`` and ``-3E-2`` are numbers (YAML 1.2
    and every user read them so; YAML 1.1 needs a dot and makes them strings)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML value to the field's declared type, or raise naming ``where``."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(annotation, value, where)
    if origin is Literal:
        if value is False and "off" in typing.get_args(annotation):
            value = "off"  # YAML 1.1 reads a bare `off` as false
        if value not in typing.get_args(annotation):
            raise ConfigError(f"{where}: {value!r} is not one of {typing.get_args(annotation)}")
        return value
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{where}: union types are not supported in the config")
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where} = {value}: must be a finite number")
        return float(value)
    if annotation is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 1e5 reads as a float
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {annotation!r}")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} (known: {sorted(names)})")
    kwargs = {
        k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()
    }
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``"train.lr=0.01"`` into ``{"train": {"lr": 0.01}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    dotted, raw = text.split("=", 1)
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({reason})") from None
    nested: dict[str, Any] = {}
    cursor = nested
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A built-in preset name (``demo``, ``paper``) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    preset = CONFIG_DIR / f"{name_or_path}.yaml"
    if not preset.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"no config file {path} and no preset {name_or_path!r} (presets: {known})")
    return preset


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = _load_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(decode_error(path, exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return raw


def load_config(
    source: str | Path | None = None, overrides: typing.Sequence[str] = ()
) -> Config:
    """Defaults (the paper's settings) <- YAML file or preset <- dotted overrides."""
    values: dict[str, Any] = {}
    if source is not None:
        values = _read_yaml(resolve_config_path(source))
    for text in overrides:
        values = _merge(values, parse_override(text))
    return config_from_dict(values)


def upgrade_saved_config(values: dict[str, Any]) -> dict[str, Any]:
    """A config saved by an older ``uld`` (in a checkpoint or run folder), made to mean today
    what it meant when it was saved. Fields added since then default to the paper's values,
    except where the old behaviour differed:

    - ``data.pixel_spacing_mm`` (added in 0.2): before it, slices kept the scan's pixels (0);
    - ``model.pretrained``: before 0.2 its default was ``''`` (random start);
    - ``infer.link_iou`` / ``infer.link_max_gap`` became ``infer.overlap.*`` (and the Kalman
      linker, new in 0.2, bridges the same gap);
    - ``train.num_workers`` became ``data.num_workers``.
    """
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    data, model = out.setdefault("data", {}), out.setdefault("model", {})
    train = out.get("train")
    if isinstance(train, dict) and "num_workers" in train:  # train.num_workers until 0.3
        data.setdefault("num_workers", train.pop("num_workers"))
    data.setdefault("pixel_spacing_mm", 0.0)
    model.setdefault("pretrained", "")
    infer = out.setdefault("infer", {})
    if "link_iou" in infer or "link_max_gap" in infer:  # 0.1 had only the overlap linker
        overlap = {"iou_threshold": infer.pop("link_iou", 0.3), "max_gap": infer.pop("link_max_gap", 1)}
        infer.setdefault("overlap", overlap)
        infer.setdefault("kalman", {"max_gap": overlap["max_gap"]})
    return out


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build a frozen ``Config`` from nested plain values (e.g. a checkpoint's ``config``);
    every value is range-checked (:mod:`uld.config_ranges`)."""
    config = _build(Config, values, "")
    problem = range_problem(config_to_dict(config))
    if problem:
        raise ConfigError(problem)
    return config


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML, JSON and checkpoints."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def override(config: Config, *texts: str) -> Config:
    """A copy of ``config`` with dotted overrides applied."""
    values = config_to_dict(config)
    for text in texts:
        values = _merge(values, parse_override(text))
    return config_from_dict(values)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))  # never half a file


SPEED_ONLY = frozenset({"data.num_workers", "data.prefetch_factor", "train.compile",
                        "train.cudnn_benchmark"})
"""Keys that change only how fast a run goes, never what it computes."""


MINING_ONLY = frozenset(f"mining.{f.name}" for f in dataclasses.fields(MiningConfig)
                        if f.name not in ("policy", "ema_momentum", "ema_warmup"))
"""Mining keys that change nothing in a run without mining (``mining.policy: none``): its EMA
teacher depends on the momentum and warm-up only."""


def config_differences(saved: dict[str, Any], config: Config,
                       ignore: typing.AbstractSet[str] = SPEED_ONLY) -> list[str]:
    """Dotted keys whose value in ``config`` differs from a saved config (as today's code
    reads it: :func:`upgrade_saved_config`), leaving out the keys in ``ignore``, and the
    :data:`MINING_ONLY` keys when neither config mines (a baseline or oracle run stays the same
    run whatever the mining settings of its preset)."""
    current = config_to_dict(config)
    stored = config_to_dict(config_from_dict(upgrade_saved_config(saved)))
    if current["mining"]["policy"] == stored["mining"]["policy"] == "none":
        ignore = ignore | MINING_ONLY
    return [
        f"{section}.{key}"
        for section, values in current.items() if isinstance(values, dict)
        for key, value in values.items()
        if stored.get(section, {}).get(key) != value and f"{section}.{key}" not in ignore
    ]
