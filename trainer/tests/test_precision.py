"""The bf16 step: what is optimised stays fp32, the gradient points where the fp32 one does, and micro-batching
changes nothing but the speed."""

from __future__ import annotations

import copy

import pytest
import torch

from nanoresearch_trainer.data import encode_row
from nanoresearch_trainer.model import attach_lora, lora_parameters
from nanoresearch_trainer.precision import Float32Head, compute_dtype, cpu_has_native_bf16, prepare
from nanoresearch_trainer.train import TeacherWeights, TrainConfig, sdpo_backward

ROWS = [
    {"x": f"topic t{i}", "y": " ".join(["alpha", "a1", "a2", "beta", "b1"][: 2 + i % 4]), "feedback": "likes alpha"}
    for i in range(4)
]


def lora_model(tiny, seed=1):
    model = attach_lora(tiny, rank=4, alpha=8)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in lora_parameters(model).items():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.eval()
    return model


def gradient(model, rows, cfg, dtype):
    for p in model.parameters():
        p.grad = None
    out = sdpo_backward(model, rows, 0, cfg, TeacherWeights(model, "live", 0.0), torch.device("cpu"), dtype)
    params = lora_parameters(model)
    return out, torch.cat([params[n].grad.flatten() for n in sorted(params)])


def test_auto_precision_follows_the_hardware():
    assert compute_dtype("cpu", "fp32") == torch.float32
    assert compute_dtype("cpu", "bf16") == torch.bfloat16
    assert compute_dtype("cpu", "auto") == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    with pytest.raises(ValueError):
        compute_dtype("cpu", "fp8")


def test_prepare_keeps_the_lora_weights_fp32_and_unrounded_and_the_logits_fp32(tok, tiny):
    model = lora_model(tiny)
    before = {n: p.detach().clone() for n, p in lora_parameters(model).items()}
    ids = torch.tensor([[3, 5, 6, 4]])
    with torch.no_grad():
        reference = model(input_ids=ids).logits
    prepare(model, torch.bfloat16)
    after = lora_parameters(model)
    assert all(after[n].dtype == torch.float32 and torch.equal(after[n], before[n]) for n in before)
    assert isinstance(model.get_output_embeddings(), Float32Head)
    linear = [m for n, m in model.named_modules() if n.endswith("q_proj.base_layer")]
    assert linear and all(m.weight.dtype == torch.bfloat16 for m in linear)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids).logits
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, reference, atol=0.1)


def test_fp32_head_is_the_same_projection(tok, tiny):
    model = lora_model(tiny)
    ids = torch.tensor([[3, 5, 6, 4, 7]])
    with torch.no_grad():
        reference = model(input_ids=ids, logits_to_keep=3).logits
        prepare(model, torch.float32)
        assert torch.allclose(model(input_ids=ids, logits_to_keep=3).logits, reference, atol=1e-6)


def test_micro_batches_give_the_gradient_of_the_whole_batch(tok, tiny):
    rows = [encode_row(tok, r, 512, 64) for r in ROWS]
    model = lora_model(tiny)
    whole, g_whole = gradient(model, rows, TrainConfig(micro_batch=len(rows)), torch.float32)
    single, g_single = gradient(model, rows, TrainConfig(micro_batch=1), torch.float32)
    assert abs(whole.loss - single.loss) < 1e-6
    assert torch.allclose(g_whole, g_single, atol=1e-6, rtol=1e-5)


def test_bf16_gradient_points_where_the_fp32_gradient_does(tok, tiny):
    rows = [encode_row(tok, r, 512, 64) for r in ROWS]
    fp32 = lora_model(tiny)
    bf16 = prepare(copy.deepcopy(fp32), torch.bfloat16)
    out32, g32 = gradient(fp32, rows, TrainConfig(micro_batch=1), torch.float32)
    out16, g16 = gradient(bf16, rows, TrainConfig(micro_batch=1), torch.bfloat16)
    assert g16.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(g16, g32, dim=0)
    assert cosine > 0.99, float(cosine)
    assert abs(out16.loss - out32.loss) < 0.05 * max(1.0, abs(out32.loss))


def test_a_bf16_round_leaves_the_base_model_as_it_was(tok, tiny):
    from nanoresearch_trainer.train import train

    model = lora_model(tiny)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    head = model.get_output_embeddings()
    train(model, tok, ROWS, TrainConfig(steps=2, batch_size=2, precision="bf16"))
    after = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    assert all(after[n].dtype == torch.float32 and torch.equal(after[n], base[n]) for n in base)
    assert model.get_output_embeddings() is head and model.config._attn_implementation == "sdpa"
