"""GGUF LoRA export: the q/k permutation is the one transformers undoes when it loads a Llama GGUF."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

from nanoresearch_trainer.export_gguf import gguf_lora_tensors, llama_permute
from nanoresearch_trainer.model import default_base


@pytest.mark.parametrize("n_head, n_kv_head", [(9, 3), (4, 2), (8, 8)])
def test_permutation_is_the_inverse_of_transformers_gguf_loader(n_head, n_kv_head):
    processor = LlamaTensorProcessor(config={"num_attention_heads": n_head, "num_key_value_heads": n_kv_head})
    head_dim = 6
    rng = np.random.default_rng(0)
    for name, heads in (("blk.0.attn_q.weight", n_head), ("blk.0.attn_k.weight", n_kv_head)):
        hf = rng.standard_normal((heads * head_dim, 5)).astype(np.float32)
        restored = processor.process(llama_permute(hf, heads), name).weights
        np.testing.assert_array_equal(restored, hf)
        assert not np.array_equal(llama_permute(hf, heads), hf)


def test_lora_b_of_q_and_k_is_permuted_and_the_delta_matches_the_permuted_base():
    """(B_gguf @ A) must equal permute(B @ A): the update lands on the rows llama.cpp stores."""
    rng = np.random.default_rng(1)
    n_head, n_kv, head_dim, hidden, r = 4, 2, 8, 32, 3
    state = {}
    for module, rows in (("q_proj", n_head * head_dim), ("k_proj", n_kv * head_dim), ("v_proj", n_kv * head_dim)):
        key = f"base_model.model.model.layers.0.self_attn.{module}"
        state[f"{key}.lora_A.weight"] = torch.tensor(rng.standard_normal((r, hidden)), dtype=torch.float32)
        state[f"{key}.lora_B.weight"] = torch.tensor(rng.standard_normal((rows, r)), dtype=torch.float32)
    out = gguf_lora_tensors(state, architecture="llama", n_head=n_head, n_kv_head=n_kv)
    for module, name, heads in (("q_proj", "attn_q", n_head), ("k_proj", "attn_k", n_kv), ("v_proj", "attn_v", None)):
        key = f"base_model.model.model.layers.0.self_attn.{module}"
        delta = (state[f"{key}.lora_B.weight"] @ state[f"{key}.lora_A.weight"]).numpy()
        want = llama_permute(delta, heads) if heads else delta
        got = out[f"blk.0.{name}.weight.lora_b"] @ out[f"blk.0.{name}.weight.lora_a"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    qwen = gguf_lora_tensors(state, architecture="qwen2", n_head=n_head, n_kv_head=n_kv)  # not permuted
    np.testing.assert_array_equal(
        qwen["blk.0.attn_q.weight.lora_b"],
        state["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"].numpy(),
    )


def test_embedded_smollm2_gguf_q_and_k_round_trip_through_transformers_unpermutation():
    """On the real base file: un-permuting its attn_q/attn_k as transformers does and permuting back with the
    exporter's function gives the stored tensor (head counts read from the file)."""
    path: Path = default_base()
    reader = gguf.GGUFReader(path)
    n_head = int(reader.fields["llama.attention.head_count"].parts[-1][0])
    n_kv = int(reader.fields["llama.attention.head_count_kv"].parts[-1][0])
    processor = LlamaTensorProcessor(config={"num_attention_heads": n_head, "num_key_value_heads": n_kv})
    tensors = {t.name: t for t in reader.tensors}
    for name, heads in (("blk.0.attn_q.weight", n_head), ("blk.0.attn_k.weight", n_kv)):
        t = tensors[name]
        stored = gguf.quants.dequantize(t.data, t.tensor_type)
        hf = processor.process(stored, name).weights
        np.testing.assert_array_equal(llama_permute(hf, heads), stored)
        assert not np.array_equal(hf, stored)


def test_adapter_architecture_is_the_base_gguf_general_architecture(tmp_path):
    from nanoresearch_trainer.export_gguf import gguf_architecture

    base = tmp_path / "base.gguf"
    writer = gguf.GGUFWriter(str(base), "gemma3")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    # transformers calls this architecture gemma3_text; llama.cpp only loads an adapter named like the base.
    assert gguf_architecture(base, "gemma3_text") == "gemma3"
    assert gguf_architecture(tmp_path / "hf-folder", "llama") == "llama"
    assert gguf_architecture(None, "qwen2") == "qwen2"
