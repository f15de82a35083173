"""log p(y | x) as the trainer computes it, row by row: the student context's token ids (the rendered x read
back), the teacher context's, the response ids and the log-probability of every response token. For checking
the trainer against inference (kernel-lib's rendering test) and for held-out scoring."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .data import encode_row, is_rendered, pack
from .loss import response_logits, token_logprobs


@torch.no_grad()
def score_rows(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    *,
    max_len: int = 4096,
    max_response: int = 1024,
    with_base: bool = False,
) -> Iterator[dict[str, Any]]:
    """One dict per row. `logprobs[j]` = log p(response_ids[j] | prompt_ids, response_ids[:j]) in float64 from the
    model's logits; the response ends with EOS (as trained), which `eos_appended` says. `with_base` (a PeftModel):
    also `base_logprobs`, the same with the adapter switched off, from the same process and weights."""
    device = next(model.parameters()).device
    for row in rows:
        encoded = encode_row(tokenizer, {**row, "feedback": row.get("feedback") or "-"}, max_len, max_response)
        batch = pack([encoded.student_prompt], [encoded.response], pad_id=0).to(device)  # one row: no padding
        scored = {
            "id": row.get("id"),
            "rendered": is_rendered(tokenizer, row["x"]),
            "prompt_ids": encoded.student_prompt,
            "teacher_prompt_ids": encoded.teacher_prompt,
            "response_ids": encoded.response,
            "eos_appended": tokenizer.eos_token_id is not None,
            "logprobs": _response_logprobs(model, batch),
        }
        if with_base:
            with model.disable_adapter():
                scored["base_logprobs"] = _response_logprobs(model, batch)
        yield scored


def _response_logprobs(model: torch.nn.Module, batch) -> list[float]:
    """The training step's own response logits (loss.response_logits), in float64."""
    logprobs = response_logits(model, batch).double().log_softmax(-1)
    return token_logprobs(logprobs, batch.input_ids[:, -batch.response_len :])[0].tolist()
