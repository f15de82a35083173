"""x is the planner's whole rendered prompt: the trainer reads it back to the ids the model saw, and the teacher is
the same rendering with the feedback block at one place -- which is exactly where rendering the feedback-carrying
user message would put it, so a rendered x and a bare user message train the same way."""

from __future__ import annotations

from nanoresearch_trainer.data import (
    FEEDBACK_TEMPLATE,
    encode_row,
    encode_text,
    generation_suffix,
    is_rendered,
    render_prompt,
    student_prompt_text,
    teacher_prompt_text,
    teacher_user_text,
)

SYSTEM = "Answer with one JSON object only."


def test_the_generation_suffix_is_what_follows_the_last_user_message(tok):
    assert generation_suffix(tok) == " <|assistant|> "
    x = render_prompt(tok, "topic t1", SYSTEM)
    assert is_rendered(tok, x)
    assert not is_rendered(tok, "topic t1")  # a bare user message (OpenAI-compatible server, older stores)


def test_teacher_is_the_rendering_with_the_feedback_before_the_assistant_header(tok):
    user, feedback = "topic t3", "likes alpha"
    x = render_prompt(tok, user, SYSTEM)
    teacher = teacher_prompt_text(tok, x, feedback)
    # One documented place: the end of the last user message's content.
    assert teacher == x[: -len(generation_suffix(tok))] + FEEDBACK_TEMPLATE.format(
        feedback=feedback
    ) + generation_suffix(tok)
    # ... which is the rendering of the user message with the feedback appended: both row kinds agree.
    assert teacher == render_prompt(tok, teacher_user_text(user, feedback), SYSTEM)
    assert teacher_prompt_text(tok, user, feedback) == render_prompt(tok, teacher_user_text(user, feedback))


def test_a_rendered_x_is_encoded_as_it_stands_and_a_bare_one_is_rendered_first(tok):
    x = render_prompt(tok, "topic t2", SYSTEM)
    row = {"x": x, "y": "alpha a1", "feedback": "likes alpha"}
    encoded = encode_row(tok, row, max_len=512, max_response=64)
    assert encoded.student_prompt == encode_text(tok, x)
    assert encoded.teacher_prompt == encode_text(tok, teacher_prompt_text(tok, x, "likes alpha"))
    bare = encode_row(tok, {**row, "x": "topic t2"}, max_len=512, max_response=64)
    assert bare.student_prompt == encode_text(tok, student_prompt_text(tok, "topic t2"))
    assert bare.student_prompt == encode_text(tok, render_prompt(tok, "topic t2"))
    # The response ids are the same whichever form x has.
    assert bare.response == encoded.response


def test_score_command_reads_x_back_and_scores_y_as_a_plain_forward(tok, tiny, tmp_path, capsys):
    import json

    import torch

    from nanoresearch_trainer.cli import main

    tiny.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    x = render_prompt(tok, "topic t4", SYSTEM)
    (tmp_path / "rows.jsonl").write_text(json.dumps({"id": "r", "x": x, "y": "beta b1", "feedback": ""}) + "\n")
    assert main(["score", "--data", str(tmp_path / "rows.jsonl"), "--base", str(tmp_path / "m"), "--threads", "1"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    row = next(e for e in events if e["event"] == "row")
    assert events[-1]["event"] == "done" and events[-1]["rows"] == 1
    assert row["rendered"] and row["prompt_ids"] == encode_text(tok, x)
    assert row["response_ids"] == encode_text(tok, "beta b1") + [tok.eos_token_id]
    ids = torch.tensor([row["prompt_ids"] + row["response_ids"]])
    with torch.no_grad():
        logprobs = tiny(input_ids=ids).logits[0].double().log_softmax(-1)
    start = len(row["prompt_ids"])
    expected = [float(logprobs[start - 1 + j, t]) for j, t in enumerate(row["response_ids"])]
    assert max(abs(a - b) for a, b in zip(row["logprobs"], expected, strict=True)) < 1e-5


def test_score_with_base_gives_the_adapter_and_the_base_from_one_process(tok, tiny, tmp_path, capsys):
    import json

    import pytest
    import torch

    from nanoresearch_trainer.cli import main
    from nanoresearch_trainer.model import attach_lora, lora_parameters

    tiny.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    lora = attach_lora(tiny, rank=4, alpha=8)
    with torch.no_grad():  # a LoRA B of zero would leave the model as it is
        for p in lora_parameters(lora).values():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.3)
    lora.save_pretrained(tmp_path / "adapter")
    rows = tmp_path / "rows.jsonl"
    row = {"id": "r", "x": render_prompt(tok, "topic t4", SYSTEM), "y": "beta b1", "feedback": ""}
    rows.write_text(json.dumps(row) + "\n")

    def scored(*extra):
        argv = ["score", "--data", str(rows), "--base", str(tmp_path / "m"), "--threads", "1", *extra]
        assert main(argv) == 0
        return next(json.loads(line) for line in capsys.readouterr().out.splitlines() if '"row"' in line)

    both = scored("--adapter-in", str(tmp_path / "adapter"), "--with-base")
    assert both["logprobs"] == pytest.approx(scored("--adapter-in", str(tmp_path / "adapter"))["logprobs"], abs=1e-9)
    assert both["base_logprobs"] == pytest.approx(scored()["logprobs"], abs=1e-9)
    assert max(abs(a - b) for a, b in zip(both["logprobs"], both["base_logprobs"], strict=True)) > 1e-3
    assert main(["score", "--data", str(rows), "--base", str(tmp_path / "m"), "--with-base"]) == 2
    assert "--adapter-in" in capsys.readouterr().out
