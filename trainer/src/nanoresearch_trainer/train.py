"""One SDPO round: replay the user's whole feedback history for N optimiser steps on a LoRA adapter, then
write the adapter (PEFT + GGUF + manifest) atomically."""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from .data import DataError, Encoded, encode_row, has_feedback, load_schema, pack_pair
from .export_gguf import export_peft_model
from .loss import LossOutput, response_logits, sdpo_loss
from .model import DEFAULT_TARGETS, lora_parameters
from .precision import autocast, compute_dtype, prepared

Event = Callable[[dict[str, Any]], None]


@dataclass
class TrainConfig:
    steps: int = 50
    lr: float = 1e-4
    rank: int = 16
    alpha: float = 32.0
    max_len: int = 2048
    max_response: int = 512
    clip: float = 5.0
    loss_type: str = "token"
    teacher: str = "live"          # live: current weights under no_grad; ema: an EMA copy of the LoRA weights
    ema_rate: float = 0.05
    topk: int = 20
    seed: int = 0
    batch_size: int = 1
    max_grad_norm: float = 1.0
    targets: Sequence[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    precision: str = "auto"        # auto | fp32 | bf16 (see precision.py)
    micro_batch: int = 0           # rows per forward; 0 = 1 on a CPU (no padding: measured fastest), all on a GPU


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
    exponential moving average of the LoRA weights, swapped in for the teacher pass only (never optimised)."""

    def __init__(self, model: torch.nn.Module, kind: str, rate: float):
        if kind not in ("live", "ema"):
            raise ValueError(f"unknown teacher {kind!r}; use live or ema")
        self.kind, self.rate = kind, rate
        self.params = lora_parameters(model)
        self.ema = {n: p.detach().clone() for n, p in self.params.items()} if kind == "ema" else {}

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        if self.kind == "live":
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
        for n, p in self.params.items() if self.kind == "ema" else ():
            self.ema[n].mul_(1 - self.rate).add_(p.detach(), alpha=self.rate)


def score_batch(model: torch.nn.Module, rows: Sequence[Encoded], pad_id: int, cfg: TrainConfig,
                teacher: TeacherWeights, device: torch.device, dtype: torch.dtype = torch.float32
                ) -> tuple[LossOutput, int]:
    """Student forward with grad, teacher forward under no_grad, SDPO loss. Returns (loss, tokens processed)."""
    student, teacher_batch, targets, mask = pack_pair(rows, pad_id)
    student, teacher_batch = student.to(device), teacher_batch.to(device)
    targets, mask = targets.to(device), mask.to(device)
    with torch.no_grad(), teacher.active(), autocast(device, dtype):
        teacher_logits = response_logits(model, teacher_batch)
    with autocast(device, dtype):
        student_logits = response_logits(model, student)
    out = sdpo_loss(student_logits, teacher_logits, targets, mask, loss_type=cfg.loss_type, clip=cfg.clip,
                    topk=cfg.topk)
    return out, student.real_tokens + teacher_batch.real_tokens


@dataclass
class StepOutput:
    loss: float                   # the batch's loss: token mean over all its scored tokens
    mean_advantage: float
    scored_tokens: int
    tokens: int                   # real tokens processed (student + teacher contexts)


def sdpo_backward(model: torch.nn.Module, rows: Sequence[Encoded], pad_id: int, cfg: TrainConfig,
                  teacher: TeacherWeights, device: torch.device, dtype: torch.dtype) -> StepOutput:
    """Gradient of one batch's loss, accumulated into the LoRA weights' .grad, in micro-batches of
    cfg.micro_batch rows. Each micro-batch's token-mean loss is weighted by its share of the batch's scored
    tokens, so the gradient is that of the token mean over the whole batch, whatever the micro-batch size."""
    size = cfg.micro_batch or (len(rows) if torch.device(device).type == "cuda" else 1)
    chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
    total = sum(len(r.response) for r in rows if r.scored) or 1
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


def train(model: torch.nn.Module, tokenizer: Any, rows: Sequence[dict[str, Any]], cfg: TrainConfig,
          on_event: Event = lambda e: None) -> TrainResult:
    """Train the LoRA of `model` (a PeftModel) in place. Rows without feedback carry no signal and are skipped
    (their loss and gradient would be exactly zero); every other row is replayed in a seeded order."""
    torch.manual_seed(cfg.seed)
    device = next(model.parameters()).device
    encoded = [encode_row(tokenizer, r, cfg.max_len, cfg.max_response) for r in rows if has_feedback(r)]
    if not encoded:
        raise DataError(f"none of the {len(rows)} rows has feedback: there is nothing to learn from")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()  # no dropout: the teacher target and the student must be deterministic
    dtype = compute_dtype(device, cfg.precision)
    with prepared(model, dtype):
        return _train_loop(model, encoded, rows, pad_id, cfg, device, dtype, on_event)


def _train_loop(model: torch.nn.Module, encoded: list[Encoded], rows: Sequence[dict[str, Any]], pad_id: int,
                cfg: TrainConfig, device: torch.device, dtype: torch.dtype, on_event: Event) -> TrainResult:
    order = random.Random(cfg.seed)
    params = list(lora_parameters(model).values())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    teacher = TeacherWeights(model, cfg.teacher, cfg.ema_rate)

    queue: list[int] = []
    losses: list[float] = []
    advantages: list[float] = []
    tokens_total, compute_s = 0, 0.0
    started = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        picked = []
        while len(picked) < cfg.batch_size:
            if not queue:
                queue = list(range(len(encoded)))
                order.shuffle(queue)
            picked.append(encoded[queue.pop()])
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        out = sdpo_backward(model, picked, pad_id, cfg, teacher, device, dtype)
        tokens = out.tokens
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        teacher.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        compute_s += dt
        tokens_total += tokens
        losses.append(out.loss)
        advantages.append(out.mean_advantage)
        on_event({"event": "step", "step": step, "steps": cfg.steps, "loss": losses[-1],
                  "mean_advantage": out.mean_advantage, "tokens_per_s": tokens / dt if dt > 0 else 0.0})
    window = max(1, min(len(encoded), len(losses)))  # one pass over the history: a steadier figure than one row
    return TrainResult(
        steps=cfg.steps,
        final_loss=sum(losses[-window:]) / window if losses else 0.0,
        mean_advantage=sum(advantages[-window:]) / window if advantages else 0.0,
        tokens_per_s=tokens_total / compute_s if compute_s > 0 else 0.0,
        wall_s=time.perf_counter() - started,
        examples=len(rows), examples_used=len(encoded), losses=losses)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as handle:
                os.fsync(handle.fileno())
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out: Path) -> None:
    """Leftovers of killed runs (DIR.tmp-<pid> whose process is gone)."""
    for leftover in out.parent.glob(f"{out.name}.tmp-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def validate_manifest(manifest: dict[str, Any]) -> None:
    import jsonschema

    jsonschema.Draft202012Validator(load_schema("adapter-manifest.schema.json"),
                                    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).validate(manifest)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def save_adapter(model: torch.nn.Module, out: str | os.PathLike[str], manifest: dict[str, Any],
                 base: str | os.PathLike[str] | None = None) -> Path:
    """Write peft/ (safetensors), adapter.gguf and manifest.json into DIR.tmp-<pid>, fsync, then rename onto
    DIR. Until the final rename the previous DIR is untouched, so a killed run leaves it intact."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save_pretrained(str(tmp / "peft"), safe_serialization=True)
    export_peft_model(model, tmp / "adapter.gguf", base)
    manifest = {**manifest, "files": {"peft_dir": "peft", "gguf": "adapter.gguf"}}
    validate_manifest(manifest)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    _fsync_tree(tmp)
    if out.exists():
        old = out.parent / f"{out.name}.old-{os.getpid()}"
        os.rename(out, old)        # the only window without DIR is between these two renames
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return out
