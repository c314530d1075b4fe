"""The experiment file: one YAML describing a whole UMS-Rep comparison.

A flat, commented dataclass per section is the documentation (nanoGPT style). Loading is strict:
unknown keys, wrong types, impossible combinations, unknown registry names and options
(``umsrep/validate.py``) and missing data paths are refused before anything runs, naming the
file and the dotted key (see ``umsrep.config.ConfigError``). A file may build on another with
``base: other.yaml`` (``read_experiment_file``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from umsrep.config import ConfigError, from_dict, load_yaml, resolve_base, to_dict
from umsrep.schema import SEGMENTATION_CORRECT_IOU
from umsrep.tasks import KIND_METRICS, Task
from umsrep.train.config import TrainConfig
from umsrep.validate import check_registered

TASK_KINDS = ("classification", "segmentation", "denoise")


@dataclass(frozen=True)
class SourceConfig:
    """One dataset: an existing manifest, a raw folder to import, or synthetic data."""

    manifest: str | None = None  # a manifest.parquet made by `umsrep data import`
    importer: str | None = None  # or an importer name (shenzhen, montgomery, jsrt, kermany, rsna, generic)
    path: str | None = None  # ... and the raw dataset folder (or CSV for generic)
    synthetic: Literal["cxr", "doppler"] | None = None  # or synthetic data made on the fly
    n: int = 200  # synthetic: number of images
    seed: int = 0  # synthetic: generator seed
    split: str | None = None  # keep only manifest rows of this split (e.g. kermany "train")
    require_mask: bool = False  # keep only rows with a mask

    def validate(self, key: str) -> None:
        given = [x for x in (self.manifest, self.importer, self.synthetic) if x is not None]
        if len(given) != 1:
            raise ConfigError(key, "give exactly one of manifest, importer (+path) or synthetic")
        if self.importer is not None and self.path is None:
            raise ConfigError(f"{key}.path", f"importer {self.importer!r} needs a path")


@dataclass(frozen=True)
class DataConfig:
    image_size: int = 256  # square side after OpenCV bicubic resize (paper: 256)
    # how a non-square image becomes square: "stretch" (paper) or "pad" (letterbox, keeps the
    # aspect ratio; umsrep/data/geometry.py). Predictions are mapped back the same way.
    fit: Literal["stretch", "pad"] = "stretch"
    root: str | None = None  # relative paths resolve against this (CLI --data-root overrides)
    pretrain: list[SourceConfig] = field(default_factory=list)  # unlabelled pool for the backbone
    train: list[SourceConfig] = field(default_factory=list)  # fine-tuning data, split in k folds
    test: list[SourceConfig] = field(default_factory=list)  # external test set (optional)
    # joint image/mask augmentation while training (no left-right flips: the heart would change
    # side). "cxr" (umsrep/data/dataset.py): on half of the images (the others keep their
    # pixels, as test images do: umsrep/data/augment.py CxrAugment) aspect jitter 0.85-1.15,
    # rotation 5 deg, shift 5 %, zoom 0.9-1.1; brightness/contrast 0.1 on all.
    # "cxr_robust" (umsrep/data/augment.py): "cxr" plus
    # what unseen radiographs meet: gamma 0.6-1.6 (p 0.5), a washed-out film (0-1 mapped onto
    # [0.15-0.45, 0.9-1.0], p 0.3), the image shrunk 0.7-0.95 into a black frame (p 0.25) and
    # black bands 3-25 % thick at one edge or two opposite ones, masks zeroed under them (p 0.4)
    # "cxr_robust_sharpness": "cxr_robust" plus a blurred (sigma 0.5-1.5 px) or unsharp-masked
    # (amount 0.5-2) film on 40 % of the images; sites differ most in sharpness, and a 256 px
    # lung head trained on Shenzhen read JSRT's smooth films badly (sweeps/cxr_public.yaml)
    augment: Literal["none", "cxr", "cxr_robust", "cxr_robust_sharpness"] = "none"
    # per-image contrast normalization of every original image before it is resized, in
    # training, scoring and predict alike (umsrep/data/contrast.py): "none", "clahe" (contrast-
    # limited adaptive histogram equalization, clip 2, 8x8 tiles) or "equalize" (global)
    contrast: Literal["none", "clahe", "equalize"] = "none"
    cache_dir: str = ".umsrep/cache"  # preprocessing cache, shared by every run

    def validate(self, key: str) -> None:
        if not self.train:
            raise ConfigError(f"{key}.train", "at least one fine-tuning dataset is required")
        if self.image_size < 16:
            raise ConfigError(f"{key}.image_size", "must be at least 16")


@dataclass(frozen=True)
class FoldsConfig:
    k: int = 10  # k-fold cross-validation on data.train (patient-level, stratified)
    seed: int = 0
    val_fraction: float = 0.1  # part of each training fold kept for validation / model selection
    stratify: str | None = None  # label column to stratify on
    run: int | None = None  # run only the first N folds (smoke tests); None = all k

    def validate(self, key: str) -> None:
        if self.k < 2:
            raise ConfigError(f"{key}.k", "needs at least 2 folds")
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"{key}.val_fraction", "must be in (0, 0.5)")
        if self.run is not None and not 1 <= self.run <= self.k:
            raise ConfigError(f"{key}.run", f"must be between 1 and k={self.k}")


@dataclass(frozen=True)
class NoiseSettings:
    kinds: list[Literal["gaussian", "poisson"]] = field(default_factory=lambda: ["gaussian"])
    sigmas: list[float] = field(default_factory=lambda: [10.0, 20.0, 30.0, 40.0, 50.0])  # 0-255
    per_image: bool = True  # draw the kind and sigma per image (else per batch)
    # masked blocks on top of the noise (umsrep/noise.py mask_blocks): this fraction of the
    # mask_block x mask_block px cells of each image set to its mean grey, to be filled in
    mask: float = 0.0
    mask_block: int = 16


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "cdae"  # a registered backbone (`umsrep models`)
    preset: str = "default"  # paper | default | tiny
    width: float | None = None  # channel multiplier on top of the preset
    pretrain: Literal["denoise", "supervised", "none"] = "denoise"
    task: str | None = None  # supervised pretraining: the task (name in `tasks`) it learns
    head: str = "denoise"  # the head used while pretraining (denoise), ignored for supervised
    noise: NoiseSettings = field(default_factory=NoiseSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra backbone constructor arguments


@dataclass(frozen=True)
class StrategyConfig:
    name: Literal["independent", "alternating", "joint"]
    options: dict[str, Any] = field(default_factory=dict)  # e.g. weighting, weights, ratios
    # ``train`` settings of this strategy's head stages that differ from the experiment's (any
    # ``TrainConfig`` key: epochs, lr, patience, ...). Heads on a frozen backbone converge
    # sooner than a network trained whole, so ``independent`` may get fewer epochs; a tuned
    # hyperparameter (``search.space``) still wins over the value given here.
    train: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BaselineConfig:
    enabled: bool = True
    arch: Literal["same", "paper"] = "same"  # same architecture as the shared one, or the paper's
    denoiser: bool = True  # a separate denoiser feeds the separate models (paper Figure 4)


@dataclass(frozen=True)
class ParamSpace:
    type: Literal["loguniform", "uniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    def validate(self, key: str) -> None:
        if self.type == "choice" and not self.values:
            raise ConfigError(f"{key}.values", "a choice needs values")
        if self.type != "choice" and (self.low is None or self.high is None or self.low >= self.high):
            raise ConfigError(key, "needs low < high")
        if self.type == "loguniform" and self.low is not None and self.low <= 0:
            raise ConfigError(f"{key}.low", "loguniform needs low > 0")


SEARCHABLE = (
    "lr", "batch_size", "optimizer", "weight_decay", "dropout", "epochs", "ema",
    "alternating_ratio", "noise_sigma_max",
)  # plus "weight/<task>" for joint loss weights


@dataclass(frozen=True)
class SearchConfig:
    num_samples: int = 0  # trials per searched stage; 0 = no sweep, use the settings as given
    space: dict[str, ParamSpace] = field(default_factory=dict)
    applies_to: list[str] | None = None  # strategies (and/or "baseline") to sweep; None = all strategies
    metric: str = "val_score"  # mean over tasks of each task's main validation metric
    mode: Literal["min", "max"] = "max"
    # multi-objective (Optuna's multi-objective sampler; scheduler: none): e.g.
    # ["val/lung/dice", "val/abnormal/auc"], each with its mode (``modes``, default ``mode``);
    # the configuration kept is the Pareto-optimal trial with the best rank sum (sweeps.driver)
    objectives: list[str] | None = None
    modes: list[Literal["min", "max"]] | None = None

    def objective_modes(self) -> tuple[list[str], list[str]]:
        """The searched metrics and their modes: ``objectives`` (and ``modes``), or ``metric``."""
        objectives = list(self.objectives or [self.metric])
        return objectives, list(self.modes or [self.mode] * len(objectives))
    scheduler: Literal["asha", "none"] = "asha"
    grace_period: int = 2
    seed: int = 0


FITS = ("stretch", "pad")  # umsrep.data.geometry.FITS, without loading OpenCV to read a file


@dataclass(frozen=True)
class EvaluationConfig:
    # Segmentation scored at the original size (and ``umsrep predict`` masks): average the
    # probability maps of these fits of the original image, each mapped back, before the
    # threshold (test-time augmentation over aspect ratio, umsrep/derive/tta.py); "shift:N"
    # adds four views of each fit moved diagonally by N pixels of the model's square. Empty:
    # only data.fit, on the cached image.
    tta: list[str] = field(default_factory=list)
    # After the threshold, at the original size (umsrep/derive/postprocess.py): drop connected
    # regions smaller than this fraction of the largest (0 = keep all), fill enclosed holes.
    min_component: float = 0.0
    fill_holes: bool = False
    # Then keep only the N largest connected regions (0 = all; 2 for lungs: a region in a black
    # band or below the diaphragm goes even when it is too large for min_component).
    keep_largest: int = 0
    # The cut applied to a segmentation head's probabilities wherever masks are scored at the
    # original size and in ``umsrep predict``: "held_out" = the grid value with the best Dice on
    # the stage's held-out fold (umsrep/runner/threshold.py), or a fixed number. Under a shift
    # of annotation style a fixed 0.5 generalizes better: on cxr_public (run 6) the held-out
    # choice (0.6-0.7 on Shenzhen, +0.001 Dice there) cost 0.005 on Montgomery and sent one
    # alternating fold to 0.65 on JSRT, whose masks are drawn more generously.
    threshold: float | Literal["held_out"] = "held_out"
    # a segmentation counts as correct (predictions' y_pred, McNemar in the report) when its
    # per-image IoU is at least this; umsrep report --iou-threshold overrides it
    correct_iou: float = SEGMENTATION_CORRECT_IOU

    def validate(self, key: str) -> None:
        for i, view in enumerate(self.tta):
            shift = view[len("shift:"):] if view.startswith("shift:") else None
            if view not in FITS and not (shift is not None and shift.isdigit()
                                         and int(shift) > 0):
                raise ConfigError(f"{key}.tta[{i}]", f"{view!r} is not a view; use "
                                  f"{', '.join(FITS)} or shift:N (N pixels, N >= 1)")
        if sum(v.startswith("shift:") for v in self.tta) > 1:
            raise ConfigError(f"{key}.tta", "at most one shift:N (each fit gets the four views "
                              "moved by N)")
        if self.tta and all(v.startswith("shift:") for v in self.tta):
            raise ConfigError(f"{key}.tta", "shift:N moves the views of a fit: name a fit too "
                              f"({', '.join(FITS)})")
        if not 0.0 < self.correct_iou <= 1.0:
            raise ConfigError(f"{key}.correct_iou", "must be in (0, 1]")
        if not 0.0 <= self.min_component < 1.0:
            raise ConfigError(f"{key}.min_component", "must be in [0, 1)")
        if self.keep_largest < 0:
            raise ConfigError(f"{key}.keep_largest", "must be 0 (off) or a number of regions")
        if self.threshold != "held_out" and not 0.0 < float(self.threshold) < 1.0:
            raise ConfigError(f"{key}.threshold", "must be held_out or a number in (0, 1)")


@dataclass(frozen=True)
class ResourcesConfig:
    num_workers: int = 1  # Ray Train workers per stage
    use_gpu: bool = False
    gpus_per_worker: float = 1.0  # < 1 lets trials share one GPU (one worker per trial then)
    cpus_per_worker: float = 1.0
    cpus_per_trial: float = 0.25  # the Tune trial that drives a TorchTrainer
    max_concurrent: int | None = None  # concurrent stages/trials; None = what resources allow
    max_failures: int = 2  # a lost Train worker restarts from the last checkpoint this often
    # true: a wave's stages are shared out among as many long-lived TorchTrainer runs as can run
    # at once, each pulling the next stage from a queue (one worker start-up per run, not per
    # stage); false: one TorchTrainer per stage
    pack: bool = True
    # custom Ray resources each Tune trial (the driver of one TorchTrainer) asks for besides
    # cpus_per_trial, e.g. {umsrep_driver: 0.01} with `ray start --head --resources=
    # '{"umsrep_driver": 100}'`: the drivers stay on the head, so a lost worker node takes only
    # Train workers with it and Ray Train restarts them elsewhere (cluster/README.md)
    trial_resources: dict[str, float] = field(default_factory=dict)

    def validate(self, key: str) -> None:
        if self.num_workers < 1:
            raise ConfigError(f"{key}.num_workers", "at least 1 Ray Train worker")
        for name, amount in self.trial_resources.items():
            if name.upper() in ("CPU", "GPU", "MEMORY"):
                raise ConfigError(f"{key}.trial_resources.{name}",
                                  "custom resources only; a trial's CPUs are cpus_per_trial")
            if amount <= 0:
                raise ConfigError(f"{key}.trial_resources.{name}", "must be above 0")
        if self.use_gpu and self.gpus_per_worker < 1 and self.num_workers > 1:
            raise ConfigError(
                f"{key}.gpus_per_worker",
                "fractional GPUs only with num_workers: 1 (DDP ranks must not share a GPU)",
            )


@dataclass(frozen=True)
class TrackingConfig:
    """Experiment tracking for ``umsrep sweep`` and ``umsrep demo`` (``--mlflow URI`` sets it).

    ``mlflow``: an MLflow tracking URI; ``file:./mlruns`` (a folder, relative to where the
    command starts) needs nothing else running, a server's ``http://host:5000`` works too.
    Every stage becomes one MLflow run (parameters; tags stage, fold, strategy, kind; each
    validated epoch's metrics; the final ``final/<split>/<task>/<metric>``; its model folder as
    the ``checkpoint`` artifact), every sweep trial one more, all in one MLflow experiment
    named after the run folder; ``--resume`` keeps the run ids (``<run>/mlflow.json``).
    Needs the tracking extra: ``pip install -e ".[tracking]"``. ``umsrep train`` ignores it.
    """

    mlflow: str | None = None

    def validate(self, key: str) -> None:
        if self.mlflow is not None and not self.mlflow.strip():
            raise ConfigError(f"{key}.mlflow", "an MLflow tracking URI, e.g. file:./mlruns")


@dataclass(frozen=True)
class Experiment:
    name: str
    data: DataConfig
    tasks: list[Task]
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    strategies: list[StrategyConfig] = field(
        default_factory=lambda: [StrategyConfig("independent"), StrategyConfig("alternating"),
                                 StrategyConfig("joint")]
    )
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # head fine-tuning and baselines
    search: SearchConfig = field(default_factory=SearchConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # MLflow (sweep, demo)
    rules: list[dict[str, Any]] = field(default_factory=list)  # derivable recommendation rules
    # published figures shown beside ours in the report: {task: {label: {metric: value}}}; a
    # label that is no strategy is a published anchor; "split" (str) names the split it is from
    paper_reference: dict[str, dict[str, dict[str, float | str]]] = field(default_factory=dict)
    seed: int = 0

    def validate(self, key: str) -> None:
        names = [t.name for t in self.tasks]
        if not names:
            raise ConfigError("tasks", "at least one target task is required")
        self._check_rules()
        for i, view in enumerate(self.evaluation.tta):
            if view.startswith("shift:") and int(view[6:]) >= self.data.image_size // 2:
                raise ConfigError(f"evaluation.tta[{i}]", f"{view} moves the view by half the "
                                  f"model's {self.data.image_size} px square or more; use a "
                                  "few pixels")
        if len(set(names)) != len(names):
            raise ConfigError("tasks", f"task names must be unique, got {names}")
        if self.backbone.pretrain == "supervised":
            if self.backbone.task not in names:
                raise ConfigError("backbone.task", f"supervised pretraining needs one of {names}")
        if self.backbone.pretrain == "denoise" and self.backbone.head != "denoise":
            raise ConfigError("backbone.head", "denoise pretraining uses the 'denoise' head")
        noise = self.backbone.noise
        if not 0.0 <= noise.mask < 1.0:
            raise ConfigError("backbone.noise.mask", f"a fraction of cells in [0, 1), got "
                              f"{noise.mask}")
        if noise.mask_block < 1 or noise.mask_block >= self.data.image_size:
            raise ConfigError("backbone.noise.mask_block", f"cells of 1 px or more, smaller "
                              f"than the model's {self.data.image_size} px, got "
                              f"{noise.mask_block}")
        # train_for also refuses a strategy's unknown train keys and wrong types, naming it
        trains = [("train", self.train), ("backbone.train", self.backbone.train)] + [
            (f"strategies[{i}].train", self.train_for(s.name))
            for i, s in enumerate(self.strategies)]
        for key, train in trains:
            unknown = [n for n in train.score_tasks or [] if n not in names]
            if unknown:
                raise ConfigError(f"{key}.score_tasks",
                                  f"{unknown} are not tasks of this experiment ({names})")
        kinds = {t.name: t.kind for t in self.tasks}
        for i, t in enumerate(self.tasks):
            guide = t.head_kwargs.get("guide")
            if guide is not None and kinds.get(guide) != "segmentation":
                raise ConfigError(f"tasks[{i}].head_kwargs.guide",
                                  f"{guide!r} is not a segmentation task of this experiment "
                                  f"({', '.join(n for n, k in kinds.items() if k == 'segmentation') or 'none'})")
            crop = t.head_kwargs.get("crop", False)
            if not isinstance(crop, bool):  # "false" in quotes would be truthy: a crop
                raise ConfigError(f"tasks[{i}].head_kwargs.crop",
                                  f"must be true or false, got {crop!r}")
            if crop and guide is None:
                raise ConfigError(f"tasks[{i}].head_kwargs.crop",
                                  "crop cuts the input to the guide's box: give guide too")
            dilate = t.head_kwargs.get("dilate", 0)
            if isinstance(dilate, bool) or not isinstance(dilate, int) or dilate < 0:
                raise ConfigError(f"tasks[{i}].head_kwargs.dilate",
                                  f"must be a whole number of pixels >= 0, got {dilate!r}")
            if dilate and guide is None:
                raise ConfigError(f"tasks[{i}].head_kwargs.dilate",
                                  "dilate widens the guide's weights: give guide too")
        strategies = [s.name for s in self.strategies]
        if len(set(strategies)) != len(strategies):
            raise ConfigError("strategies", "each strategy at most once")
        for name in self.search.space:
            if name not in SEARCHABLE and not (name.startswith("weight/") and name[7:] in names):
                raise ConfigError(
                    f"search.space.{name}",
                    f"not searchable; use one of {', '.join(SEARCHABLE)} or weight/<task>",
                )
        ema = self.search.space.get("ema")
        if ema is not None:  # a sampled decay must be one TrainConfig accepts
            values = ema.values if ema.type == "choice" else [ema.low, ema.high]
            if not all(0.0 <= float(v) < 1.0 for v in values):
                raise ConfigError("search.space.ema", "a weight-average decay lies in [0, 1)")
        for target in self.search.applies_to or []:
            if target not in strategies + ["baseline"]:
                raise ConfigError("search.applies_to", f"{target!r} is not a configured strategy")
        if self.search.num_samples and not self.search.space:
            raise ConfigError("search.space", "num_samples > 0 needs a search space")
        self._check_objectives()
        for task, by_label in self.paper_reference.items():
            for label, figures in by_label.items():
                for metric, value in figures.items():
                    if isinstance(value, str) != (metric == "split"):
                        raise ConfigError(
                            f"paper_reference.{task}.{label}.{metric}",
                            "published figures are numbers; only 'split' is a string (the "
                            "split they were measured on, e.g. test:montgomery)",
                        )

    def _check_rules(self) -> None:
        """Recommendation rules are applied by ``umsrep predict``, after training: a typo in
        one is refused here instead (``umsrep.derive.recommend.check_rules``)."""
        if not self.rules:
            return
        from umsrep.derive.recommend import check_rules, load_rules  # pandas, no torch

        classes = {t.name: (None if t.classes is None else [str(c) for c in t.classes])
                   for t in self.tasks if t.kind == "classification"}
        try:
            check_rules(load_rules(self.rules), classes)
        except (ValueError, TypeError) as exc:
            raise ConfigError("rules", str(exc)) from None

    def _check_objectives(self) -> None:
        """The searched metrics are ones every searched stage reports: ``val_score``,
        ``val/loss``, ``val/loss/<task>`` or ``val/<task>/<metric>`` (a metric of the task's
        kind), checked here rather than found missing in a Ray trial after pretraining."""
        search = self.search
        key = "search.objectives" if search.objectives is not None else "search.metric"
        objectives, modes = search.objective_modes()
        if search.objectives == [] or not objectives:
            raise ConfigError(key, "name at least one metric")
        if search.modes is not None and (search.objectives is None
                                         or len(search.modes) != len(objectives)):
            raise ConfigError("search.modes", f"one mode per objective ({len(objectives)})")
        if len(objectives) > 1 and search.scheduler != "none":
            raise ConfigError("search.scheduler", "ASHA stops trials on one metric; with "
                              "several objectives set scheduler: none")
        kinds = {t.name: t.kind for t in self.tasks}
        named: set[str] = set()
        for name in objectives:
            parts = name.split("/")
            if name in ("val_score", "val/loss"):
                continue
            if len(parts) == 3 and parts[:2] == ["val", "loss"] and parts[2] in kinds:
                named.add(parts[2])
                continue
            if len(parts) == 3 and parts[0] == "val" and parts[1] in kinds:
                known = KIND_METRICS.get(kinds[parts[1]], ())
                if parts[2] in known:
                    named.add(parts[1])
                    continue
                raise ConfigError(key, f"{name!r}: {parts[1]} ({kinds[parts[1]]}) reports "
                                  f"{', '.join(known)}")
            raise ConfigError(key, f"{name!r} is not reported by a stage; use val_score, "
                              "val/loss, val/loss/<task> or val/<task>/<metric> (tasks: "
                              f"{', '.join(kinds)})")
        if not named or not search.num_samples:
            return
        searched = search.applies_to or [s.name for s in self.strategies]
        one_task = [s.name for s in self.strategies if s.name in searched and s.name ==
                    "independent" and not s.options.get("one_stage")]
        one_task += ["baseline"] if "baseline" in searched else []
        if one_task and len(kinds) > 1:
            raise ConfigError(key, f"{', '.join(one_task)} train(s) one task per stage, and a "
                              f"stage of another task does not report {sorted(named)}: search "
                              "it on val_score or val/loss, or leave it out of "
                              "search.applies_to")

    # ------------------------------------------------------------------ helpers
    def train_for(self, strategy: str) -> TrainConfig:
        """The training settings of ``strategy``'s head stages: ``train`` with the strategy's
        own ``train`` keys over it (the baseline and unknown names get ``train`` itself)."""
        for i, s in enumerate(self.strategies):
            if s.name == strategy and s.train:
                return from_dict(TrainConfig, {**to_dict(self.train), **s.train},
                                 f"strategies[{i}].train")
        return self.train

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def digest(self, *parts: Any) -> str:
        """Stable short hash of config parts (content-addressed stores)."""
        blob = json.dumps(to_dict(parts), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# Taken from the file that writes them, never from its base: the experiment's name (its run
# folders) and the published figures it is compared with (they belong to its own tasks).
NOT_INHERITED = ("name", "paper_reference")


def read_experiment_file(path: str | Path) -> dict[str, Any]:
    """The plain data of an experiment file, laid over its ``base:`` file if it names one.

    ``base: cxr_public.yaml`` (relative to the including file) reads that file first: mappings
    merge key by key with the including file winning, lists are replaced whole (``test: []``
    clears one), ``key: null`` drops an inherited setting (its default applies), and
    ``NOT_INHERITED`` keys come only from the including file. A base may have a base; files
    that include each other are refused.
    """
    return load_yaml(path, NOT_INHERITED)


def load_experiment(
    path: str | Path | None = None,
    *,
    data: dict[str, Any] | None = None,
    data_root: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    check_paths: bool = True,
) -> Experiment:
    """Load and validate an experiment YAML (or a dict). ``data_root`` overrides ``data.root``.

    ``overrides`` are dotted keys (``{"folds.k": 3}``) applied before validation. Every registry
    name and option is checked (``umsrep/validate.py``) without building a model; an error is a
    ``ConfigError`` naming the file (when there is one), the dotted key and the fix.
    """
    if data is None and path is None:
        raise ValueError("give a path or data")
    try:
        return _load(path, data, data_root, overrides, check_paths)
    except ConfigError as exc:
        raise (exc.in_file(path) if path is not None else exc) from None


def _load(path: str | Path | None, data: dict[str, Any] | None, data_root: str | Path | None,
          overrides: dict[str, Any] | None, check_paths: bool) -> Experiment:
    if data is None:
        data = read_experiment_file(path)
    elif "base" in data:  # a base named in a dict is relative to its file, else to the cwd
        data = resolve_base(data, path or Path.cwd() / "<data>", NOT_INHERITED)
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {}) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise ConfigError(".".join(parents[:i + 1]), f"cannot set {dotted!r}: "
                                  "not a section of the experiment")
        node[leaf] = value
    if data_root is not None:
        data.setdefault("data", {})["root"] = str(data_root)
    exp = from_dict(Experiment, data)
    check_registered(exp)
    if exp.data.root is not None:
        root = Path(exp.data.root).expanduser().resolve()
        exp = replace(exp, data=replace(exp.data, root=str(root)))
    if check_paths:
        check_data_paths(exp)
    return exp


def resolve_path(exp: Experiment, p: str) -> Path:
    path = Path(p).expanduser()
    if not path.is_absolute() and exp.data.root is not None:
        path = Path(exp.data.root) / path
    return path.resolve()


def check_data_paths(exp: Experiment) -> None:
    for section in ("pretrain", "train", "test"):
        for i, src in enumerate(getattr(exp.data, section)):
            for attr in ("manifest", "path"):
                value = getattr(src, attr)
                if value is not None and not resolve_path(exp, value).exists():
                    hint = " (set --data-root)" if exp.data.root is None else ""
                    raise ConfigError(
                        f"data.{section}[{i}].{attr}",
                        f"{resolve_path(exp, value)} does not exist{hint}",
                    )
