"""The step's compute dtype: bf16 where the hardware multiplies bf16 natively, fp32 otherwise.

bf16 means: every forward runs under torch.autocast(bf16), so the matrix products multiply in bf16 (the frozen
linear weights are stored in bf16 for it); what is optimised, accumulated or reduced stays fp32 -- the LoRA
weights (the master copy the optimiser updates; autocast casts them per product), their gradients, the residual
stream and the norms, the vocabulary projection, the response logits and the loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 (e.g. AMD Zen 4, Intel Cooper Lake+) or AMX-BF16 (Intel Sapphire Rapids+), per /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compute_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "fp32":
        return torch.float32
    native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    if precision == "bf16" or native:
        return torch.bfloat16
    return torch.float32


class Float32Head(torch.nn.Module):
    """The vocabulary projection in fp32, outside autocast (in bf16 a logit of 15 would be rounded to a multiple of
    0.0625, which alone moves the loss by about 1e-2), as one 2-D matrix product (transformers' 3-D call ran as a
    batched product at a tenth of the matmul rate here). It shares the original weight (tied embeddings stay tied)
    and runs on the response positions only."""

    def __init__(self, weight: torch.nn.Parameter):
        super().__init__()
        self.weight = weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            flat = hidden.reshape(-1, hidden.shape[-1]).float()
            return torch.nn.functional.linear(flat, self.weight).view(*hidden.shape[:-1], -1)


FP32_ATTENTION = "sdpa_fp32"


def _sdpa_fp32(module, query, key, value, attention_mask, **kwargs):
    """Scaled dot-product attention in fp32 inside a bf16 step: PyTorch's CPU flash-attention kernel measured about
    2x slower in bf16 than in fp32 here, and the softmax keeps fp32 precision."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    with torch.autocast(query.device.type, enabled=False):
        out, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
    return out.to(query.dtype), weights


def _register_fp32_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(FP32_ATTENTION, _sdpa_fp32)
    ALL_MASK_ATTENTION_FUNCTIONS.register(FP32_ATTENTION, sdpa_mask)


def prepare(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The model as the step runs it. Both precisions: the vocabulary projection as Float32Head. bf16 also: the
    frozen weights of the linear layers stored in bf16 (autocast multiplies in bf16 anyway; stored so, no cast per
    forward), attention in fp32 on a CPU (FP32_ATTENTION); everything else stays fp32 -- embeddings and norms (the
    residual stream adds in fp32), the LoRA weights (the master copy the optimiser updates) and their gradients."""
    head = model.get_output_embeddings()
    if head is not None and getattr(head, "bias", None) is None and not isinstance(head, Float32Head):
        head.weight.data = head.weight.data.float()
        model.set_output_embeddings(Float32Head(head.weight))
    if dtype == torch.float32:
        return model
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lm_head" not in name and not module.weight.requires_grad:
            module.weight.data = module.weight.data.to(dtype)
    config = getattr(model, "config", None)
    on_cpu = next(model.parameters()).device.type == "cpu"
    if on_cpu and getattr(config, "_attn_implementation", None) == "sdpa":
        _register_fp32_attention()
        model.set_attn_implementation(FP32_ATTENTION)
    return model


@contextlib.contextmanager
def prepared(model: torch.nn.Module, dtype: torch.dtype) -> Iterator[torch.nn.Module]:
    """prepare() for the duration of a training round, then the model as it was (the original fp32 base weights,
    head and attention), so what the caller evaluates or saves afterwards is the model it gave, plus the LoRA."""
    weights = {name: p.data for name, p in model.named_parameters()}
    head = model.get_output_embeddings()
    attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
    try:
        yield prepare(model, dtype)
    finally:
        for name, p in model.named_parameters():
            if name in weights and not p.requires_grad:
                p.data = weights[name]
        if head is not None and model.get_output_embeddings() is not head:
            model.set_output_embeddings(head)
        if attention and model.config._attn_implementation != attention:
            model.set_attn_implementation(attention)


@contextlib.contextmanager
def autocast(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """torch.autocast to `dtype` for a bf16 step; nothing for fp32."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield
