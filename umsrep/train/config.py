"""``TrainConfig``: how one stage trains, the one shape of the experiment's ``train:`` and
``backbone.train:`` sections and what ``umsrep.train.loop.fit`` reads.

Where a stage runs (device, seed, its checkpoint folder) is not part of it: ``fit`` takes
those as arguments. Light on purpose (no torch): the experiment file's loader imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from umsrep.config import ConfigError, from_dict


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 16  # used by whoever builds the DataLoaders; recorded with the run
    lr: float = 1e-3
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    weight_decay: float = 0.0
    patience: int = 10  # early stopping, epochs without improvement of the monitored metric; 0: off
    # what early stopping, the plateau schedule and best-epoch selection watch: "loss" = the sum
    # of the tasks' validation losses (min); "score" = the mean over the stage's tasks of each
    # task's main validation metric (Dice, AUC (else accuracy), PSNR/50; max). With several
    # tasks, "loss" lets the noisiest loss decide: on cxr_public a joint stage stopped at epoch
    # 17 of 36 with its lung Dice still rising, because the TB cross-entropy on 45 validation
    # images swung by 40 % between epochs, and the restored epoch 11 had a lower lung Dice.
    monitor: Literal["loss", "score"] = "loss"
    # "score" over these tasks only. A task whose validation metric is noisy (an AUC on 45
    # images swings by +-0.05) then does not stop, or pick the epoch of, a stage whose other
    # task is still improving; a stage (or an independent head) that trains none of them is
    # scored by minus its validation loss: on cxr_public the separate TB model, stopped on its
    # 45-image AUC, kept epochs 3, 1 and 13 (held-out TB accuracy 0.65), on its loss 13, 19, 37
    # (0.76). Unset: every task's metric counts.
    score_tasks: list[str] | None = None
    # the LR schedule: "plateau" = reduce on plateau of the monitor (below; off with
    # plateau_patience 0); "cosine" = cosine annealing from lr to ~0 over `epochs`, one step
    # per epoch (Loshchilov & Hutter 2017), which fits a fixed, short budget: a stage of 20
    # epochs leaves a plateau schedule with patience 4 one or two halvings at most
    schedule: Literal["plateau", "cosine"] = "plateau"
    plateau_patience: int = 5  # reduce-on-plateau; 0: off
    plateau_factor: float = 0.5
    max_steps_per_epoch: int | None = None  # cap for smoke tests
    # per_task: each task draws its own batches from the images labelled for it (one forward
    # pass per task and step). shared: one loader over the images labelled for any of the
    # stage's tasks, each task scored on those of a batch that carry its target, so the joint
    # and independent strategies run the network once per batch for every head (a head guided
    # by another head then costs its own layers only). Alternating takes turns either way.
    task_batches: Literal["per_task", "shared"] = "per_task"
    loader_workers: int = 0  # DataLoader workers per Train worker
    # auto | fp32 | bf16 | fp16 (umsrep/precision.py): auto = bf16 autocast on a GPU that has it
    # (else fp16 + GradScaler) and on a CPU with native bf16 (AVX-512 BF16/AMX), else fp32
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True  # NHWC memory format for model and batches (CPU and CUDA)
    # validate (and report to Ray, checkpoint to Ray) every N epochs and after the last one;
    # early stopping and the plateau schedule still count patience in epochs
    val_every: int = 1
    # which weights are scored and saved in the stage's checkpoint/: "best" = the epoch with the
    # best validation value of the early-stopping monitor (choosing that epoch is what the
    # validation split is for; later epochs have begun to overfit), "last" = the final epoch.
    # The other is kept too, in checkpoint_last/ or checkpoint_best/.
    checkpoint: Literal["best", "last"] = "best"
    # > 0: validate, choose and keep an exponential moving average of the weights
    # (umsrep/train/averaging.py), updated after every step with this decay (0.99: the last
    # ~100 steps weigh most); 0: the trained weights themselves
    ema: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any], key: str = "train") -> TrainConfig:
        return from_dict(cls, data, key)

    def validate(self, key: str) -> None:
        if self.val_every < 1:
            raise ConfigError(f"{key}.val_every", "must be at least 1")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"{key}.ema", "the weight average's decay must lie in [0, 1)")

    @property
    def monitor_key(self) -> str:
        """The epoch-metrics key the loop watches (code may set another key of the epoch
        metrics directly, e.g. ``train/loss``; an experiment file only loss or score)."""
        return {"loss": "val/loss", "score": "val/score"}.get(self.monitor, self.monitor)

    @property
    def monitor_mode(self) -> Literal["min", "max"]:
        return "min" if self.monitor_key.endswith("loss") else "max"

    @property
    def restore_best(self) -> bool:
        """End with the best epoch's weights (``checkpoint: best``)."""
        return self.checkpoint == "best"
