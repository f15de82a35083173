"""The settings of one SDPO round, with their defaults in one place: the CLI's flags take their defaults from
TrainConfig. This module imports nothing heavy, so the CLI can build its parser (and answer --help or a usage
error) without loading torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

DEFAULT_TARGETS = ("q_proj", "v_proj")
TEACHER_KINDS = ("live", "ema", "base")


@dataclass
class TrainConfig:
    # 6 steps a round is what the personalization benchmark measured teaching a user (its rounds are 6 feedback
    # each): at this lr, 3 such rounds are 18 steps, and 3e-4 over those 18 already collapsed the plans.
    steps: int = 6
    # lr, loss and teacher from the personalization benchmark (its runs are in the kernel-lib README): logit-fkl
    # carried a user's preference that the token loss did not; 3e-4 collapsed the plans in round 3; at 2e-4 the
    # live teacher still tipped 3 of the 6 round-3 adapters into empty plans, where the EMA teacher kept all of
    # them with the same mean rise over the five users.
    lr: float = 2e-4
    rank: int = 16
    alpha: float = 32.0
    max_len: int = 2048
    max_response: int = 512
    clip: float = 5.0
    loss_type: str = "logit-fkl"
    teacher: str = "ema"  # one of TEACHER_KINDS (train.TeacherWeights says what each is)
    ema_rate: float = 0.05
    topk: int = 20
    seed: int = 0
    batch_size: int = 1  # rows per optimiser step: the global batch, split across the processes of --nproc
    max_grad_norm: float = 1.0
    targets: Sequence[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    precision: str = "auto"  # auto | fp32 | bf16 (see precision.py)
    micro_batch: int = 0  # rows per forward; 0 = 1 on a CPU (no padding: measured fastest), all on a GPU
