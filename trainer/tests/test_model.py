"""The dequantised copy of a GGUF base: later loads read it, and it is the same model as the GGUF gives."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from nanoresearch_trainer import model as model_module
from nanoresearch_trainer.model import COPY_COMPLETE, COPY_ENV, default_base, dequantized_copy, load_base

CPU = torch.device("cpu")
MESSAGES = [
    {"role": "system", "content": 'Answer with JSON: {"selected_skill_ids": ["s-1"]} — ünïcode too.'},
    {"role": "user", "content": "Plan the ablation of the tokenizer."},
]


def ids_of(tokenizer) -> list[int]:
    return tokenizer.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True, return_dict=False)


@pytest.fixture
def gguf(tmp_path) -> Path:
    """The embedded planner's file, copied into a folder of the test's own (its dequantised copy goes beside it)."""
    path = tmp_path / "models" / default_base().name
    path.parent.mkdir()
    shutil.copy2(default_base(), path)
    return path


def test_the_first_load_writes_the_copy_and_every_load_is_the_gguf_model(gguf, monkeypatch):
    monkeypatch.setenv(COPY_ENV, "off")
    reference, reference_tok = load_base(gguf, CPU)
    assert not (gguf.parent / ".dequantized").exists()
    monkeypatch.delenv(COPY_ENV)

    first, first_tok = load_base(gguf, CPU)
    copy = dequantized_copy(gguf, torch.float32)
    assert copy.parent == gguf.parent / ".dequantized" and (copy / COPY_COMPLETE).is_file()
    assert [p.name for p in copy.parent.iterdir()] == [copy.name]  # no partial copy left behind

    loads = []
    real = model_module._from_pretrained
    monkeypatch.setattr(
        model_module, "_from_pretrained", lambda where, *a, **k: loads.append((where, k)) or real(where, *a, **k)
    )
    second, second_tok = load_base(gguf, CPU)
    assert loads == [(str(copy), {})]  # read from the copy, the GGUF not dequantised again

    expected = reference.state_dict()
    for loaded in (first, second):
        state = loaded.state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in expected)
        assert not getattr(loaded, "is_quantized", False)
    assert ids_of(first_tok) == ids_of(second_tok) == ids_of(reference_tok)
    assert second_tok.pad_token_id == reference_tok.pad_token_id
    x = torch.tensor([ids_of(reference_tok)])
    with torch.no_grad():
        assert torch.equal(second(x).logits, reference(x).logits)


def test_a_replaced_file_gets_a_new_copy_and_the_old_one_and_dead_partials_go(gguf, monkeypatch):
    monkeypatch.delenv(COPY_ENV, raising=False)
    load_base(gguf, CPU)
    old = dequantized_copy(gguf, torch.float32)
    dead_partial = old.parent / f".{old.name}.999999999.partial"
    dead_partial.mkdir()
    stat = gguf.stat()
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # as if the file were replaced
    new = dequantized_copy(gguf, torch.float32)
    assert new != old
    load_base(gguf, CPU)
    assert sorted(p.name for p in new.parent.iterdir()) == [new.name]


def test_a_copy_that_cannot_be_written_is_a_warning_and_the_round_still_loads(gguf, tmp_path, monkeypatch, capsys):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the copy's folder would go")
    monkeypatch.setenv(COPY_ENV, str(blocked))
    model, tokenizer = load_base(gguf, CPU)
    assert ids_of(tokenizer)
    err = capsys.readouterr().err
    assert "could not keep a dequantised copy" in err and COPY_ENV in err
