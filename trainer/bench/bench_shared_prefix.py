"""The live teacher's pass with and without the prompt it shares with the student (train.shared_prefix), in one
process, interleaved (alternating which goes first), medians: one trainer step each (sdpo_backward) on the
planner-shaped rows of bench_sdpo_step, in the precision the trainer picks (auto), at torch's thread count.

    .venv/bin/python trainer/bench/bench_shared_prefix.py [--base models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf]
        [--rounds 4 --batch 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402

from bench_sdpo_step import planner_rows  # noqa: E402
from nanoresearch_trainer import train  # noqa: E402
from nanoresearch_trainer.model import attach_lora, default_base, load_base  # noqa: E402
from nanoresearch_trainer.precision import compute_dtype, prepared  # noqa: E402
from nanoresearch_trainer.train import TeacherWeights, TrainConfig, sdpo_backward  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="a .gguf file or a Hugging Face folder (default: the embedded SmolLM2)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    device = torch.device("cpu")
    model, tokenizer = load_base(Path(args.base) if args.base else default_base(), device)
    model = attach_lora(model, rank=16, alpha=32)
    model.eval()
    rows = planner_rows(tokenizer, args.batch, 269, 71)
    dtype = compute_dtype(device, "auto")
    reuse = train.shared_prefix
    times: dict[str, list[float]] = {"shared": [], "whole": []}
    losses: dict[str, float] = {}
    with prepared(model, dtype):
        for round_ in range(args.rounds):
            for name in ("shared", "whole") if round_ % 2 == 0 else ("whole", "shared"):
                train.shared_prefix = reuse if name == "shared" else (lambda _rows: 0)
                model.zero_grad(set_to_none=True)
                started = time.perf_counter()
                out = sdpo_backward(
                    model,
                    rows,
                    tokenizer.pad_token_id or 0,
                    TrainConfig(),
                    TeacherWeights(model, "live", 0.0),
                    device,
                    dtype,
                )
                times[name].append(time.perf_counter() - started)
                losses[name] = out.loss
    train.shared_prefix = reuse
    shared, whole = statistics.median(times["shared"]), statistics.median(times["whole"])
    prefix = [train.shared_prefix([r]) for r in rows]
    tokens = [len(r.teacher_prompt) for r in rows]
    print(f"{len(rows)} rows, shared prefix {prefix} of {tokens} teacher prompt tokens, {dtype}")
    print(f"step: shared {shared:.2f} s, whole {whole:.2f} s (medians of {args.rounds}): {whole / shared:.2f}x")
    print(f"loss: shared {losses['shared']:.6f}, whole {losses['whole']:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
