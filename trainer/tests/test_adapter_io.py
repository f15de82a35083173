"""Adapter folders: written atomically (PEFT + GGUF + manifest), read back onto a base model as they were trained."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import torch

from nanoresearch_trainer.adapter_io import load_adapter, peft_dir_of, read_manifest, save_adapter
from nanoresearch_trainer.model import attach_lora, lora_parameters

MANIFEST = {
    "version": "v1",
    "base_model": "tiny",
    "data_sha256": "ab" * 32,
    "examples": 1,
    "steps": 1,
    "rank": 4,
    "alpha": 8.0,
    "loss_type": "token",
    "final_loss": 0.5,
    "mean_advantage": 0.1,
    "world_size": 1,
    "devices": ["cpu"],
    "created_at": "2026-12-02T05:00:00.000Z",
}


def trained_lora(base):
    model = attach_lora(copy.deepcopy(base), rank=4, alpha=8)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in lora_parameters(model).values():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def test_an_adapter_reads_back_as_it_was_written(tiny, tmp_path):
    model = trained_lora(tiny)
    out = save_adapter(model, tmp_path / "adapter", MANIFEST)
    assert read_manifest(out) == {**MANIFEST, "files": {"peft_dir": "peft", "gguf": "adapter.gguf"}}
    assert (out / "adapter.gguf").is_file() and peft_dir_of(out) == out / "peft" and peft_dir_of(out / "peft")
    assert read_manifest(out / "peft") is None

    loaded = load_adapter(copy.deepcopy(tiny), out, trainable=False)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
        assert not torch.allclose(loaded(input_ids=ids).logits, tiny(input_ids=ids).logits)
    assert not any(p.requires_grad for p in loaded.parameters())
    assert lora_parameters(load_adapter(copy.deepcopy(tiny), out, trainable=True))


def test_a_save_that_fails_leaves_the_previous_adapter_and_no_temporary(tiny, tmp_path):
    out = save_adapter(trained_lora(tiny), tmp_path / "adapter", MANIFEST)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(jsonschema.ValidationError):
        save_adapter(trained_lora(tiny), out, {**MANIFEST, "version": "v2", "rank": 0})
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]
