"""One SDPO round: replay the user's whole feedback history for N optimiser steps on a LoRA adapter, in one
process or data-parallel over several (distributed.py). Writing the adapter is adapter_io.py's."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import distributed
from .config import TEACHER_KINDS, TrainConfig
from .data import Encoded, encode_row, pack_pair, rows_with_feedback
from .distributed import SINGLE, World
from .loss import LossOutput, prefix_states, response_logits, reuses_prefix, sdpo_loss
from .model import lora_parameters
from .precision import autocast, compute_dtype, prepared

Event = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    mean_advantage: float
    tokens_per_s: float
    wall_s: float
    examples: int
    examples_used: int
    losses: list[float]


class TeacherWeights:
    """Which weights score the teacher context. 'live' = the student's current weights; 'ema' = an
    exponential moving average of the LoRA weights, swapped in for the teacher pass only (never optimised);
    'base' = the base model, the adapter switched off: a teacher that does not move with the student, within
    a round or across rounds (the EMA starts each round from the adapter the round continues)."""

    def __init__(self, model: torch.nn.Module, kind: str, rate: float):
        if kind not in TEACHER_KINDS:
            raise ValueError(f"unknown teacher {kind!r}; use one of {', '.join(TEACHER_KINDS)}")
        self.model, self.kind, self.rate = model, kind, rate
        self.params = lora_parameters(model) if kind == "ema" else {}
        self.ema = {n: p.detach().clone() for n, p in self.params.items()}

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        if self.kind == "live":
            yield
            return
        if self.kind == "base":
            with self.model.disable_adapter():
                yield
            return
        saved = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.ema[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(saved[n])

    @torch.no_grad()
    def update(self) -> None:
        """After each optimiser step: ema <- (1 - rate) * ema + rate * student."""
        for n, p in self.params.items():
            self.ema[n].mul_(1 - self.rate).add_(p.detach(), alpha=self.rate)


def score_batch(
    model: torch.nn.Module,
    rows: Sequence[Encoded],
    pad_id: int,
    cfg: TrainConfig,
    teacher: TeacherWeights,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> tuple[LossOutput, int]:
    """Student forward with grad, teacher forward under no_grad, SDPO loss. Returns (loss, tokens of the two
    contexts). With the live teacher and one row, the tokens both contexts open with (shared_prefix) are run once,
    with grad, and the teacher pass reuses their keys and values: the same logits, without a second forward over
    most of the teacher's context."""
    student, teacher_batch, targets, mask = pack_pair(rows, pad_id)
    student, teacher_batch = student.to(device), teacher_batch.to(device)
    targets, mask = targets.to(device), mask.to(device)
    shared = shared_prefix(rows) if teacher.kind == "live" and reuses_prefix(model) else 0
    prefix = None
    if shared:
        with autocast(device, dtype):
            prefix = prefix_states(model, student.input_ids[:, :shared])
    with torch.no_grad(), teacher.active(), autocast(device, dtype):
        detached = [(k.detach(), v.detach()) for k, v in prefix] if prefix else None
        teacher_logits = response_logits(model, teacher_batch, prefix=detached)
    with autocast(device, dtype):
        student_logits = response_logits(model, student, prefix=prefix)
    out = sdpo_loss(
        student_logits, teacher_logits, targets, mask, loss_type=cfg.loss_type, clip=cfg.clip, topk=cfg.topk
    )
    return out, student.real_tokens + teacher_batch.real_tokens


def shared_prefix(rows: Sequence[Encoded]) -> int:
    """How many tokens the student and the teacher context of a single row open with alike: x up to the place of
    the feedback block (data.teacher_prompt_text), nearly all of the teacher's context. 0 for several rows (padding
    would shift them apart). Each context keeps at least one prompt token of its own, so that the logit
    predicting its first response token is computed in its own pass."""
    if len(rows) != 1:
        return 0
    student, teacher = rows[0].student_prompt, rows[0].teacher_prompt
    limit, n = min(len(student), len(teacher)) - 1, 0
    while n < limit and student[n] == teacher[n]:
        n += 1
    return n


@dataclass
class StepOutput:
    loss: float  # the batch's loss: token mean over all its scored tokens
    mean_advantage: float
    scored_tokens: int
    tokens: int  # real tokens processed (student + teacher contexts)


def scored_tokens(rows: Sequence[Encoded]) -> int:
    return sum(len(r.response) for r in rows if r.scored)


def sdpo_backward(
    model: torch.nn.Module,
    rows: Sequence[Encoded],
    pad_id: int,
    cfg: TrainConfig,
    teacher: TeacherWeights,
    device: torch.device,
    dtype: torch.dtype,
    batch_scored_tokens: int | None = None,
) -> StepOutput:
    """Gradient of one batch's loss, accumulated into the LoRA weights' .grad, in micro-batches of
    cfg.micro_batch rows. Each micro-batch's token-mean loss is weighted by its share of the batch's scored
    tokens, so the gradient is that of the token mean over the whole batch, whatever the micro-batch size.
    `rows` may be one worker's share of a larger batch: `batch_scored_tokens` is then the whole batch's count,
    and the workers' gradients (and losses, advantages) add up to the whole batch's."""
    size = cfg.micro_batch or (len(rows) if torch.device(device).type == "cuda" else 1)
    chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
    total = (batch_scored_tokens if batch_scored_tokens is not None else scored_tokens(rows)) or 1
    loss = advantage = 0.0
    scored = tokens = 0
    for chunk in chunks:
        out, n = score_batch(model, chunk, pad_id, cfg, teacher, device, dtype)
        weight = out.scored_tokens / total
        if out.scored_tokens:
            (out.loss * weight).backward()
        loss += float(out.loss.detach()) * weight
        advantage += out.mean_advantage * weight
        scored += out.scored_tokens
        tokens += n
    return StepOutput(loss, advantage, scored, tokens)


def train(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    cfg: TrainConfig,
    on_event: Event = lambda e: None,
    world: World = SINGLE,
) -> TrainResult:
    """Train the LoRA of `model` (a PeftModel) in place. Rows without feedback carry no signal and are skipped
    (their loss and gradient would be exactly zero); every other row is replayed in a seeded order. With a
    `world` of several workers (each calling this with the same arguments), each step's batch is split between
    them and their gradients summed: the same steps as one process (distributed.py)."""
    torch.manual_seed(cfg.seed)
    device = next(model.parameters()).device
    encoded = [encode_row(tokenizer, r, cfg.max_len, cfg.max_response) for r in rows_with_feedback(rows)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()  # no dropout: the teacher target and the student must be deterministic
    dtype = compute_dtype(device, cfg.precision)
    with prepared(model, dtype):
        return _train_loop(model, encoded, rows, pad_id, cfg, device, dtype, on_event, world)


def _worker_step(
    model: torch.nn.Module,
    params: list[torch.nn.Parameter],
    batch: list[Encoded],
    pad_id: int,
    cfg: TrainConfig,
    teacher: TeacherWeights,
    device: torch.device,
    dtype: torch.dtype,
    world: World,
) -> StepOutput:
    """This worker's share of the batch (rows rank, rank + size, ...), then the gradients and figures summed over
    the workers: afterwards every worker holds the whole batch's gradient."""
    if world.size == 1:
        return sdpo_backward(model, batch, pad_id, cfg, teacher, device, dtype)
    share = batch[world.rank :: world.size]
    out = sdpo_backward(model, share, pad_id, cfg, teacher, device, dtype, batch_scored_tokens=scored_tokens(batch))
    distributed.sum_gradients(params)
    loss, advantage, scored, tokens = distributed.sum_over_workers(
        [out.loss, out.mean_advantage, out.scored_tokens, out.tokens], device
    )
    return StepOutput(loss, advantage, int(scored), int(tokens))


def _train_loop(
    model: torch.nn.Module,
    encoded: list[Encoded],
    rows: Sequence[dict[str, Any]],
    pad_id: int,
    cfg: TrainConfig,
    device: torch.device,
    dtype: torch.dtype,
    on_event: Event,
    world: World,
) -> TrainResult:
    order = random.Random(cfg.seed)
    params = list(lora_parameters(model).values())
    if world.size > 1:
        distributed.broadcast_parameters(params)  # rank 0's fresh LoRA A everywhere, before any copy is taken
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    teacher = TeacherWeights(model, cfg.teacher, cfg.ema_rate)

    queue: list[int] = []
    losses: list[float] = []
    advantages: list[float] = []
    tokens_total, compute_s = 0, 0.0
    started = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        picked = []  # the whole batch: every worker draws the same rows from the same seeded order
        while len(picked) < cfg.batch_size:
            if not queue:
                queue = list(range(len(encoded)))
                order.shuffle(queue)
            picked.append(encoded[queue.pop()])
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        out = _worker_step(model, params, picked, pad_id, cfg, teacher, device, dtype, world)
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        teacher.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        compute_s += dt
        tokens_total += out.tokens
        losses.append(out.loss)
        advantages.append(out.mean_advantage)
        on_event(
            {
                "event": "step",
                "step": step,
                "steps": cfg.steps,
                "loss": losses[-1],
                "mean_advantage": out.mean_advantage,
                "tokens_per_s": out.tokens / dt if dt > 0 else 0.0,
            }
        )
    window = max(1, min(len(encoded), len(losses)))  # one pass over the history: a steadier figure than one row
    return TrainResult(
        steps=cfg.steps,
        final_loss=sum(losses[-window:]) / window if losses else 0.0,
        mean_advantage=sum(advantages[-window:]) / window if advantages else 0.0,
        tokens_per_s=tokens_total / compute_s if compute_s > 0 else 0.0,
        wall_s=time.perf_counter() - started,
        examples=len(rows),
        examples_used=len(encoded),
        losses=losses,
    )
