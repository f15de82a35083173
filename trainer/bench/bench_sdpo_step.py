"""One SDPO step, fast vs naive, in the same run: step time, tokens/s, peak memory, and the same loss.

fast  = the trainer's step: every row of the batch in ONE padded forward per context (left-padded prompts,
        right-padded responses, position ids from the mask), logits only for the response positions
        (logits_to_keep), teacher under no_grad, bf16 on a GPU (fp32 on CPU).
naive = a plain reference: one row at a time, two separate forwards per row with full-sequence fp32 logits,
        gradients accumulated row by row.
Both use the token-level loss (token-mean over the batch) and must agree within 1e-3 (asserted; on a GPU the
check runs with both paths in fp32, the timed fast path in bf16). Teacher and student are kept as two
forwards: merging them into one batch would make the backward pass run over the teacher rows too.

Timings on a machine shared with other jobs drift between the two measurements; fast and naive run one
after the other, so compare them only on an otherwise idle machine (or repeat).

CPU (default): SmolLM2-135M-Instruct dequantised from the embedded GGUF.
    .venv/bin/python trainer/bench/bench_sdpo_step.py [--batch 4 --prompt-len 256 --response-len 64]
GPU: random-weight Llama models shaped like Qwen2.5-0.5B and Qwen2.5-7B, bf16 (about 3 minutes on one H100):
    .venv/bin/python trainer/bench/bench_sdpo_step.py --gpu
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402

from nanoresearch_trainer.data import Encoded, pack_pair  # noqa: E402
from nanoresearch_trainer.loss import response_logits, sdpo_loss  # noqa: E402
from nanoresearch_trainer.model import attach_lora, default_base, load_base, lora_parameters  # noqa: E402

GPU_SHAPES = {  # Llama-architecture stand-ins with the shapes of the Qwen2.5 models
    "0.5B-shaped": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                        num_key_value_heads=2, vocab_size=151936),
    "7B-shaped": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                      num_key_value_heads=4, vocab_size=152064),
}


def synthetic_rows(batch: int, prompt_len: int, response_len: int, vocab: int, seed: int = 0) -> list[Encoded]:
    """Rows of different lengths (so padding is exercised); the teacher prompt carries extra feedback tokens."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(batch):
        p = prompt_len - 17 * i
        r = response_len - 5 * i
        student = torch.randint(10, vocab, (p,), generator=gen).tolist()
        feedback = torch.randint(10, vocab, (24 + 3 * i,), generator=gen).tolist()
        teacher = student[:-4] + feedback + student[-4:]  # feedback inside the user turn, before the header
        rows.append(Encoded(student, teacher, torch.randint(10, vocab, (r,), generator=gen).tolist(), True))
    return rows


def fast_step(model, rows, optimizer, clip):
    student, teacher, targets, mask = pack_pair(rows, pad_id=0)
    device = next(model.parameters()).device
    student, teacher, targets, mask = student.to(device), teacher.to(device), targets.to(device), mask.to(device)
    with torch.no_grad():
        teacher_logits = response_logits(model, teacher)
    out = sdpo_loss(response_logits(model, student), teacher_logits, targets, mask, loss_type="token", clip=clip)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    return float(out.loss.detach()), student.real_tokens + teacher.real_tokens


def naive_step(model, rows, optimizer, clip):
    device = next(model.parameters()).device
    total_scored = sum(len(r.response) for r in rows)
    optimizer.zero_grad(set_to_none=True)
    loss_sum, tokens = 0.0, 0
    for r in rows:
        n = len(r.response)
        y = torch.tensor(r.response, device=device)
        with torch.no_grad():
            t_ids = torch.tensor([r.teacher_prompt + r.response], device=device)
            t_lp = model(input_ids=t_ids).logits[0].float().log_softmax(-1)
            t_tok = t_lp[len(r.teacher_prompt) - 1:len(r.teacher_prompt) - 1 + n].gather(-1, y[:, None])[:, 0]
        s_ids = torch.tensor([r.student_prompt + r.response], device=device)
        s_lp = model(input_ids=s_ids).logits[0].float().log_softmax(-1)
        s_tok = s_lp[len(r.student_prompt) - 1:len(r.student_prompt) - 1 + n].gather(-1, y[:, None])[:, 0]
        advantage = (t_tok - s_tok).detach().clamp(-clip, clip)
        row_loss = (-advantage * s_tok).sum() / total_scored
        row_loss.backward()
        loss_sum += float(row_loss.detach())
        tokens += t_ids.shape[1] + s_ids.shape[1]
    optimizer.step()
    return loss_sum, tokens


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, model, rows, clip, repeats, warmup):
    """Mean wall time of `repeats` steps after `warmup` steps; the LoRA state is restored after each step so
    every timed step does the same work. Returns (loss of the first step, seconds, tokens/s, peak bytes)."""
    device = next(model.parameters()).device
    params = lora_parameters(model)
    saved = {n: p.detach().clone() for n, p in params.items()}
    optimizer = torch.optim.AdamW(list(params.values()), lr=1e-4, weight_decay=0.0)

    def restore():
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])

    first_loss = None
    for _ in range(warmup):
        loss, _ = step(model, rows, optimizer, clip)
        first_loss = loss if first_loss is None else first_loss
        restore()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    tokens = 0
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        loss, tokens = step(model, rows, optimizer, clip)
        sync(device)
        times.append(time.perf_counter() - t0)
        first_loss = loss if first_loss is None else first_loss
        restore()
    seconds = sum(times) / len(times)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss * 1024
    return first_loss, seconds, tokens / seconds, peak


def randomise_lora_b(model, std=0.02):
    """Non-zero LoRA B so student and teacher differ beyond their contexts (B = 0 at init)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in lora_parameters(model).items():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def compare(name, model, rows, clip, repeats, warmup, device, fast_dtype):
    print(f"\n== {name}: batch {len(rows)}, prompt {max(len(r.student_prompt) for r in rows)}, "
          f"response {max(len(r.response) for r in rows)} tokens, device {device}", flush=True)
    results = {}
    if fast_dtype != torch.float32:
        model.to(fast_dtype)  # LoRA weights stay float32 (peft keeps adapter weights in float32)
        for p in lora_parameters(model).values():
            p.data = p.data.float()
        results["fast"] = timed(fast_step, model, rows, clip, repeats, warmup)
        model.float()
        check_fast = timed(fast_step, model, rows, clip, 1, 0)[0]  # same numerics as naive for the check
    else:
        results["fast"] = timed(fast_step, model, rows, clip, repeats, warmup)
        check_fast = results["fast"][0]
    results["naive"] = timed(naive_step, model, rows, clip, repeats, warmup)
    for label, (loss, sec, tps, peak) in results.items():
        print(f"{label:>5}: step {sec * 1000:9.1f} ms  {tps:10.0f} tokens/s  peak {peak / 2**30:6.2f} GiB  "
              f"loss {loss:.6f}", flush=True)
    diff = abs(check_fast - results["naive"][0])
    speedup = results["fast"][2] / results["naive"][2]
    print(f"loss |fast(fp32) - naive| = {diff:.2e} (must be <= 1e-3); fast(bf16) loss {results['fast'][0]:.6f}; "
          f"speed-up {speedup:.2f}x tokens/s", flush=True)
    assert diff <= 1e-3, f"{name}: fast and naive SDPO steps disagree: {check_fast} vs {results['naive'][0]}"
    return {"name": name, "speedup": speedup, "loss_diff": diff,
            **{f"{k}_{m}": v for k, (l, s, t, p) in results.items() for m, v in
               (("step_s", s), ("tokens_per_s", t), ("peak_bytes", p))}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="0.5B- and 7B-shaped random models in bf16 on CUDA")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=None)
    parser.add_argument("--response-len", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    summary = []
    if args.gpu:
        from transformers import LlamaConfig, LlamaForCausalLM

        if not torch.cuda.is_available():
            print("--gpu: no CUDA device visible", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        for name, shape in GPU_SHAPES.items():
            torch.manual_seed(0)
            config = LlamaConfig(**shape, max_position_embeddings=4096, tie_word_embeddings=False)
            previous = torch.get_default_dtype()
            torch.set_default_dtype(torch.bfloat16)
            with torch.device(device):
                model = LlamaForCausalLM(config)
            torch.set_default_dtype(previous)
            model.eval()
            model = attach_lora(model, rank=16, alpha=32)
            randomise_lora_b(model)
            rows = synthetic_rows(args.batch, args.prompt_len or 1024, args.response_len or 256, shape["vocab_size"])
            summary.append(compare(name, model, rows, 5.0, args.repeats, 1, device, torch.bfloat16))
            del model
            torch.cuda.empty_cache()
    else:
        device = torch.device("cpu")
        model, tok = load_base(default_base(), device)
        model.eval()
        torch.manual_seed(0)
        model = attach_lora(model, rank=16, alpha=32)
        randomise_lora_b(model)
        rows = synthetic_rows(args.batch, args.prompt_len or 256, args.response_len or 64, len(tok))
        summary.append(compare("SmolLM2-135M (GGUF Q4_1 dequantised, fp32)", model, rows, 5.0, args.repeats, 1,
                               device, torch.float32))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
