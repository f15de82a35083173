"""One SDPO step, fast-bf16 vs naive-fp32, interleaved in one run: tokens/s (medians), the loss difference,
and tokens/s as a fraction of the matmul rate measured on this machine right before each step.

fast  = the trainer's own step (train.sdpo_backward + AdamW): base weights in bf16 under torch.autocast where
        the CPU multiplies bf16 natively (AVX512-BF16 / AMX; else fp32), fp32 master LoRA weights, fp32 logits
        and loss; logits only for the response positions; rows in micro-batches of the size measured fastest
        (1 on a CPU: no padding, causal attention without a mask); the teacher of --teacher (default: the
        trainer's, TrainConfig.teacher), where the live teacher's pass reuses the student's keys and values over
        the prompt the two contexts share (train.shared_prefix) and the EMA teacher swaps its weights in and runs
        its whole context; torch threads = the count whose bf16 matmul throughput measured best.
naive = a plain fp32 reference: one row at a time, two separate forwards per row with full-sequence logits,
        gradients accumulated row by row, at the thread count whose fp32 matmul measured best.

The two run in alternating rounds (fast first in odd rounds, naive first in even ones) so that load on a shared
machine hits both alike; the figures are medians over the rounds. Loss: both from the same LoRA state; the
fast path in fp32 must equal naive within a few 1e-6 (same maths; the shared-prefix teacher pass sums in another
order), fast-bf16 is reported against it (target 1e-3).

Useful FLOPs of a step (the same count for both paths): 2 * P per teacher token (forward), 4 * P per student
token (forward + the activation gradient; the base is frozen), P = the transformer's linear weights, plus the
vocabulary projection at the response positions. That is the naive step's work: with the live teacher the fast
step skips the teacher's forward over the shared prompt, so its "useful" rate counts work it did not have to do,
and can pass its peak.
Fraction of peak = useful FLOP/s / the matmul FLOP/s of the path's dtype and thread count, measured right before
each of its timed steps (median): on a shared machine the rate an idle-machine peak would promise is not what a
step gets. MFU = useful FLOP/s / the device's bf16 peak:
the data-sheet dense bf16 peak for known GPUs (GPU_BF16_PEAK_TFLOPS), else the best bf16 matmul rate measured
here (a CPU, an unknown GPU). On a GPU (--gpu) both models are random Llama-architecture stand-ins with the shapes
of Qwen2.5-0.5B and -7B; fast = bf16 autocast, naive = plain fp32 (also the loss reference).

    npm run bench:trainer                 # CPU: SmolLM2-135M from the embedded GGUF
    .venv/bin/python trainer/bench/bench_sdpo_step.py [--batch 4 --prompt-len 256 --response-len 64 --rounds 5]
    .venv/bin/python trainer/bench/bench_sdpo_step.py --gpu   # 0.5B- and 7B-shaped random models on CUDA
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402

from nanoresearch_trainer.data import Encoded, encode_row, render_prompt  # noqa: E402
from nanoresearch_trainer.model import attach_lora, default_base, load_base, lora_parameters  # noqa: E402
from nanoresearch_trainer.precision import compute_dtype, cpu_has_native_bf16, prepare  # noqa: E402
from nanoresearch_trainer.train import TeacherWeights, TrainConfig, sdpo_backward  # noqa: E402

GPU_SHAPES = {  # Llama-architecture stand-ins with the shapes of the Qwen2.5 models
    "0.5B-shaped": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
    ),
    "7B-shaped": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
    ),
}
CLIP = 5.0


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


SKILLS = [
    "linear-baseline: Compare every model against a linear baseline.",
    "ablation-grid: Ablate one component at a time and report each change.",
    "seed-variance: Report the spread over three seeds.",
    "early-stopping: Stop on a held-out split and say which.",
    "small-data: Use stratified splits when a class is rare.",
    "budget-check: Estimate the CPU time before running.",
    "error-bars: Show confidence intervals, not single numbers.",
    "leakage-check: Check that no test rows leak into training.",
]


def planner_rows(tokenizer, batch: int, prompt_len: int, response_len: int) -> list[Encoded]:
    """Rows shaped like the planner's: a rendered planner prompt of about prompt_len tokens (system message, the
    instruction, candidate skills), a JSON plan of about response_len tokens, a feedback note -- encoded by the
    trainer's own encode_row (teacher = the same rendering with the feedback block before the assistant header)."""
    rows = []
    for i in range(batch):
        lines = [
            f"You plan one stage of a research project. Stage: planning. Topic: tabular study {i}.",
            "## Candidate skills",
        ]
        k = 0
        while (
            len(
                tokenizer(
                    render_prompt(tokenizer, "\n".join(lines), "Answer with one JSON object only."),
                    add_special_tokens=False,
                )["input_ids"]
            )
            < prompt_len - 12 * i
        ):
            lines.append(f"- {SKILLS[k % len(SKILLS)]} (variant {k})")
            k += 1
        x = render_prompt(tokenizer, "\n".join(lines), "Answer with one JSON object only.")
        plan = "Start from a linear baseline, ablate depth and width one at a time, report three seeds each"
        y = '{"selected_skill_ids": ["linear-baseline", "ablation-grid"], "selected_memory_ids": [], "prompt_plan": "'
        words = plan.split()
        j = 0
        while len(tokenizer(y, add_special_tokens=False)["input_ids"]) < response_len - 4 * i - 8:
            y += ("" if j == 0 else " ") + words[j % len(words)]
            j += 1
        y += '.", "update_memory": [], "update_skill": []}'
        row = {"x": x, "y": y, "feedback": "Always include a linear baseline, and use three seeds for every run."}
        rows.append(encode_row(tokenizer, row, 4096, 1024))
    return rows


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- the matmul peak


def matmul_shape(device: torch.device) -> tuple[int, int, int]:
    """[n,k]x[k,m]: the planner's MLP shape on a CPU; on a GPU one large enough to reach the tensor cores' rate."""
    return (8192, 8192, 8192) if device.type == "cuda" else (512, 576, 1536)


def matmul_gflops(dtype: torch.dtype, threads: int, device: torch.device, reps=15) -> float:
    """Median GFLOP/s of an [n,k]x[k,m] product (matmul_shape) at `threads` torch threads."""
    n, k, m = matmul_shape(device)
    if device.type == "cpu":
        torch.set_num_threads(threads)
    a = torch.randn(n, k, device=device).to(dtype)
    b = torch.randn(k, m, device=device).to(dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n * k * m / statistics.median(times) / 1e9


# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' data sheets, matched against
# torch.cuda.get_device_name() in this order (the first pattern that matches wins: "H100 PCIe" before "H100").
GPU_BF16_PEAK_TFLOPS = (
    (r"B200", 2250.0),
    (r"H200 NVL", 835.0),
    (r"H200|GH200", 989.0),
    (r"H100 PCIe", 756.0),
    (r"H100 NVL", 835.0),
    (r"H100|H800", 989.0),
    (r"A100|A800", 312.0),
    (r"L40S", 362.0),
    (r"L40\b", 181.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
)


def device_peak(device: torch.device, measured_bf16_gflops: float) -> dict:
    """The peak MFU is reported against: the data-sheet bf16 peak of a known GPU, else the bf16 matmul rate
    measured here (said so in the output: an MFU against a measured rate reads higher than one against a sheet)."""
    import re

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    for pattern, tflops in GPU_BF16_PEAK_TFLOPS if device.type == "cuda" else ():
        if re.search(pattern, name):
            return {"device": name, "bf16_peak_gflops": tflops * 1e3, "source": "data sheet (dense bf16)"}
    return {
        "device": name,
        "bf16_peak_gflops": measured_bf16_gflops,
        "source": f"measured bf16 matmul {'x'.join(map(str, matmul_shape(device)))}",
    }


def calibrate_threads(device: torch.device) -> dict:
    """Matmul throughput per thread count and dtype, alternating the dtypes; the best count for each."""
    counts = list(range(1, (os.cpu_count() or 1) + 1)) if device.type == "cpu" else [1]
    table = {"fp32": {}, "bf16": {}}
    for _ in range(3):
        for t in counts:
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                table[name].setdefault(t, []).append(matmul_gflops(dtype, t, device))
    peak = {name: {t: statistics.median(v) for t, v in per.items()} for name, per in table.items()}
    best = {name: max(per, key=per.get) for name, per in peak.items()}
    return {"gflops": peak, "best_threads": best}


# ---------------------------------------------------------------- the two steps


def fast_step(model, rows, optimizer, cfg, dtype, teacher):
    device = next(model.parameters()).device
    optimizer.zero_grad(set_to_none=True)
    out = sdpo_backward(model, rows, 0, cfg, teacher, device, dtype)
    optimizer.step()
    return out.loss, out.tokens


def naive_step(model, rows, optimizer):
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
            t_tok = t_lp[len(r.teacher_prompt) - 1 : len(r.teacher_prompt) - 1 + n].gather(-1, y[:, None])[:, 0]
        s_ids = torch.tensor([r.student_prompt + r.response], device=device)
        s_lp = model(input_ids=s_ids).logits[0].float().log_softmax(-1)
        s_tok = s_lp[len(r.student_prompt) - 1 : len(r.student_prompt) - 1 + n].gather(-1, y[:, None])[:, 0]
        advantage = (t_tok - s_tok).detach().clamp(-CLIP, CLIP)
        row_loss = (-advantage * s_tok).sum() / total_scored
        row_loss.backward()
        loss_sum += float(row_loss.detach())
        tokens += t_ids.shape[1] + s_ids.shape[1]
    optimizer.step()
    return loss_sum, tokens


class Path:
    """One way of stepping: its model copy, optimiser, thread count; LoRA restored after every step."""

    def __init__(self, name, model, threads, run):
        self.name, self.model, self.threads, self.run = name, model, threads, run
        self.params = lora_parameters(model)
        self.saved = {n: p.detach().clone() for n, p in self.params.items()}
        self.optimizer = torch.optim.AdamW(list(self.params.values()), lr=1e-4, weight_decay=0.0)
        self.times: list[float] = []
        self.peaks: list[float] = []  # matmul GFLOP/s measured right before each timed step (the load changes)
        self.tokens = 0

    def step(self, rows, record=True):
        device = next(self.model.parameters()).device
        if device.type == "cpu":
            torch.set_num_threads(self.threads)
        sync(device)
        t0 = time.perf_counter()
        loss, self.tokens = self.run(self.model, rows, self.optimizer)
        sync(device)
        if record:
            self.times.append(time.perf_counter() - t0)
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.saved[n])
        self.optimizer.state.clear()
        return loss

    def gradient(self) -> torch.Tensor:
        """The LoRA gradient of the last step (left in .grad until the next step zeroes it), flattened, fp32."""
        return torch.cat([self.params[n].grad.detach().float().flatten().cpu() for n in sorted(self.params)])


def useful_flops(model, rows) -> float:
    linear = sum(
        m.weight.numel()
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and "lm_head" not in n and "lora_" not in n
    )
    config = model.config if hasattr(model, "config") else model.base_model.config
    head = config.vocab_size * config.hidden_size
    student = sum(len(r.student_prompt) + len(r.response) for r in rows)
    teacher = sum(len(r.teacher_prompt) + len(r.response) for r in rows)
    response = sum(len(r.response) for r in rows)
    return 2 * linear * teacher + 4 * linear * student + 2 * head * response * 3


def randomise_lora_b(model, std=0.02):
    """Non-zero LoRA B so student and teacher differ beyond their contexts (B = 0 at init)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in lora_parameters(model).items():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen).to(p.device) * std)


def compare(name, model, rows, device, rounds, calibration, peak, teacher_kind):
    """`model`: an fp32 PeftModel. Builds the fast copy, checks the losses, then alternates the two paths.
    `peak`: device_peak(), what MFU is reported against. `teacher_kind`: the fast path's teacher; its EMA rate is
    0, so an EMA teacher stays at the LoRA state every step starts from (Path restores it) and scores with the
    same weights as naive's teacher: the losses compare, and the step still pays the EMA teacher's own costs."""
    fast_dtype = compute_dtype(device, "auto")
    threads = calibration["best_threads"]
    print(
        f"\n== {name}: batch {len(rows)}, prompt <= {max(len(r.student_prompt) for r in rows)}, response <= "
        f"{max(len(r.response) for r in rows)} tokens, device {device}, fast dtype {fast_dtype}, "
        f"fast teacher {teacher_kind}",
        flush=True,
    )
    model.eval()
    fast_model = prepare(copy.deepcopy(model), fast_dtype)
    teacher_fast = TeacherWeights(fast_model, teacher_kind, 0.0)

    # Batch shape for the fast path, by measurement: micro-batches of 1 (unpadded) vs the whole batch padded.
    shapes = [1, len(rows)] if len(rows) > 1 else [1]
    shape_times = {}
    fast_threads = threads["bf16" if fast_dtype == torch.bfloat16 else "fp32"]
    for size in shapes:
        cfg = TrainConfig(loss_type="token", clip=CLIP, micro_batch=size)
        probe = Path(
            f"fast-mb{size}",
            fast_model,
            fast_threads,
            lambda m, r, o, cfg=cfg: fast_step(m, r, o, cfg, fast_dtype, teacher_fast),
        )
        probe.step(rows, record=False)  # warm-up
        probe.step(rows)
        shape_times[size] = probe.times[-1]
    micro = min(shape_times, key=shape_times.get)
    print(
        "   batch shape probe (s/step): "
        + ", ".join(f"micro-batch {k}: {v:.2f}" for k, v in shape_times.items())
        + f" -> {micro}",
        flush=True,
    )
    cfg = TrainConfig(loss_type="token", clip=CLIP, micro_batch=micro)

    fast = Path("fast", fast_model, fast_threads, lambda m, r, o: fast_step(m, r, o, cfg, fast_dtype, teacher_fast))
    naive = Path("naive", model, threads["fp32"], naive_step)
    # The trainer's step in fp32 (the same maths as naive) on naive's own model: prepare() in fp32 only swaps in
    # the fp32 head, which shares its weight, so no third copy of the weights is needed (7B: 28 GB each in fp32).
    check_model = prepare(model, torch.float32)
    teacher_fp32 = TeacherWeights(check_model, teacher_kind, 0.0)
    check = Path(
        "fast-fp32", check_model, threads["fp32"], lambda m, r, o: fast_step(m, r, o, cfg, torch.float32, teacher_fp32)
    )
    loss_fast = fast.step(rows, record=False)
    grad_fast = fast.gradient()
    loss_naive = naive.step(rows, record=False)
    grad_naive = naive.gradient()
    loss_fast_fp32 = check.step(rows, record=False)
    cosine = float(torch.nn.functional.cosine_similarity(grad_fast, grad_naive, dim=0))
    norm_ratio = float(grad_fast.norm() / grad_naive.norm())
    peak_dtype = {"fast": torch.bfloat16 if fast_dtype == torch.bfloat16 else torch.float32, "naive": torch.float32}
    for r in range(rounds):
        for path in (fast, naive) if r % 2 == 0 else (naive, fast):
            path.peaks.append(matmul_gflops(peak_dtype[path.name], path.threads, device, reps=7))
            path.step(rows)
        print(
            f"   round {r + 1}/{rounds}: fast {fast.times[-1]:.2f} s "
            f"(bf16 matmul {fast.peaks[-1]:.0f} GFLOP/s just before), "
            f"naive {naive.times[-1]:.2f} s (fp32 matmul {naive.peaks[-1]:.0f} GFLOP/s)",
            flush=True,
        )

    flops = useful_flops(model, rows)
    result = {
        "name": name,
        "teacher": teacher_kind,
        "fast_dtype": str(fast_dtype).replace("torch.", ""),
        "micro_batch": micro,
        "threads": {"fast": fast.threads, "naive": naive.threads},
        "rounds": rounds,
        "loss_fast": loss_fast,
        "loss_naive": loss_naive,
        "loss_fast_fp32": loss_fast_fp32,
        "loss_diff": abs(loss_fast - loss_naive),
        "loss_diff_fp32": abs(loss_fast_fp32 - loss_naive),
        "gradient_cosine": cosine,
        "gradient_norm_ratio": norm_ratio,
    }
    for path in (fast, naive):
        sec = statistics.median(path.times)
        peak_now = statistics.median(path.peaks)
        result[path.name] = {
            "step_s_median": sec,
            "step_s": path.times,
            "tokens_per_s": path.tokens / sec,
            "useful_gflops": flops / sec / 1e9,
            "matmul_peak_gflops": peak_now,
            "matmul_peaks": path.peaks,
            "fraction_of_peak": flops / sec / 1e9 / peak_now,
            "mfu": flops / sec / 1e9 / peak["bf16_peak_gflops"],
        }
    result["speedup"] = result["fast"]["tokens_per_s"] / result["naive"]["tokens_per_s"]
    for label in ("fast", "naive"):
        f = result[label]
        print(
            f"{label:>5}: median step {f['step_s_median']:7.2f} s  {f['tokens_per_s']:8.0f} tokens/s  "
            f"{f['useful_gflops']:6.1f} useful GFLOP/s = {100 * f['fraction_of_peak']:4.1f}% of the measured "
            f"{f['matmul_peak_gflops']:.0f} GFLOP/s matmul rate (median, measured before each step; "
            f"{result['threads'][label]} thread(s)); MFU {100 * f['mfu']:.1f}% of {peak['device']}'s "
            f"{peak['bf16_peak_gflops']:.0f} GFLOP/s bf16 peak ({peak['source']})",
            flush=True,
        )
    print(
        f"loss: naive fp32 {loss_naive:.6f}, fast {result['fast_dtype']} {loss_fast:.6f} (|diff| "
        f"{result['loss_diff']:.2e}), fast fp32 {loss_fast_fp32:.6f} (|diff| {result['loss_diff_fp32']:.2e}); "
        f"LoRA gradient fast vs naive: cosine {cosine:.4f}, norm ratio {norm_ratio:.4f}",
        flush=True,
    )
    print(
        f"speed-up fast-{result['fast_dtype']} / naive-fp32: {result['speedup']:.2f}x tokens/s "
        f"(medians of {rounds} interleaved rounds)",
        flush=True,
    )
    assert result["loss_diff_fp32"] <= 1e-3, f"{name}: the fast step computes a different loss: {result}"
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="0.5B- and 7B-shaped random models on CUDA")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=None)
    parser.add_argument("--response-len", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument(
        "--teacher", choices=("live", "ema"), default=TrainConfig().teacher, help="the fast step's teacher"
    )
    args = parser.parse_args()
    device = torch.device("cuda" if args.gpu else "cpu")
    if args.gpu and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        print(
            f"--gpu needs a CUDA device, and none is visible to torch {torch.__version__} ({build}). Run it on a "
            "machine with an NVIDIA GPU and a CUDA build of torch, or leave out --gpu for the CPU bench.",
            file=sys.stderr,
        )
        return 2
    calibration = calibrate_threads(device)
    best_bf16 = calibration["gflops"]["bf16"][calibration["best_threads"]["bf16"]]
    peak = device_peak(device, best_bf16)
    print(
        f"CPU native bf16: {cpu_has_native_bf16()}; matmul GFLOP/s by threads: "
        + json.dumps({k: {t: round(v, 1) for t, v in per.items()} for k, per in calibration["gflops"].items()})
        + f"; best threads {calibration['best_threads']}; MFU against {peak['device']}: "
        f"{peak['bf16_peak_gflops']:.0f} GFLOP/s bf16 ({peak['source']})",
        flush=True,
    )
    summary = {"calibration": calibration, "peak": peak, "runs": []}
    if args.gpu:
        from transformers import LlamaConfig, LlamaForCausalLM

        for name, shape in GPU_SHAPES.items():
            torch.manual_seed(0)
            config = LlamaConfig(**shape, max_position_embeddings=4096, tie_word_embeddings=False)
            with torch.device(device):
                model = LlamaForCausalLM(config)
            model = attach_lora(model, rank=16, alpha=32)
            randomise_lora_b(model)
            rows = synthetic_rows(args.batch, args.prompt_len or 1024, args.response_len or 256, shape["vocab_size"])
            summary["runs"].append(compare(name, model, rows, device, args.rounds, calibration, peak, args.teacher))
            del model
            torch.cuda.empty_cache()
    else:
        model, tok = load_base(default_base(), device)
        torch.manual_seed(0)
        model = attach_lora(model, rank=16, alpha=32)
        randomise_lora_b(model)
        rows = planner_rows(tok, args.batch, args.prompt_len or 256, args.response_len or 64)
        name = "SmolLM2-135M (GGUF Q4_1 dequantised)"
        summary["runs"].append(compare(name, model, rows, device, args.rounds, calibration, peak, args.teacher))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
