"""SDPO learns: the divergence falls, and a consistent preference moves the student WITHOUT the feedback.

Phase A makes the random tiny Llama an in-context learner: fine-tuned on chats where the teacher-style
prompt (the trainer's own feedback template) says "likes alpha" -> answer "alpha a1 a2 a3", "likes beta" ->
"beta ...", and with no/irrelevant feedback -> either, half the time. Phase B is the trainer's SDPO round on
logged answers (half alpha, half beta), once with feedback "likes alpha" and once with the irrelevant "none".
"""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import TOPICS, make_model, make_tokenizer
from nanoresearch_trainer.data import render_prompt, teacher_user_text
from nanoresearch_trainer.model import attach_lora
from nanoresearch_trainer.train import TrainConfig, train

TRAIN_TOPICS, HELD_OUT = TOPICS[:8], TOPICS[8:]
ANSWERS = {"alpha": "alpha a1 a2 a3", "beta": "beta b1 b2 b3"}


def sft_examples(tok):
    examples = []
    for topic in TOPICS:
        x = f"topic {topic}"
        for answer in ANSWERS:
            examples.append((render_prompt(tok, x), ANSWERS[answer]))  # no feedback: 50/50
            examples.append((render_prompt(tok, teacher_user_text(x, "none")), ANSWERS[answer]))
            for _ in range(2):
                examples.append((render_prompt(tok, teacher_user_text(x, f"likes {answer}")), ANSWERS[answer]))
    return examples


@pytest.fixture(scope="module")
def in_context_learner():
    tok = make_tokenizer()
    model = make_model(len(tok), seed=3)
    rows = []
    for prompt, answer in sft_examples(tok):
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        r = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append((p, r))
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    for i, (p, r) in enumerate(rows):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        labels[i, len(p) : len(p) + len(r)] = torch.tensor(r)
    attention = (labels != -100) | (torch.arange(width)[None] < torch.tensor([len(p) for p, _ in rows])[:, None])
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = model(input_ids=ids, attention_mask=attention.long(), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return tok, model


def p_first(model, tok, user_text, answer="alpha"):
    ids = torch.tensor([tok(render_prompt(tok, user_text), add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids).logits[0, -1].softmax(-1)[tok.convert_tokens_to_ids(answer)].item()


def held_out_kl(model, tok, feedback):
    """Mean KL(student || teacher) at the first answer position over held-out topics (full vocabulary)."""
    total = 0.0
    for topic in HELD_OUT:
        x = f"topic {topic}"
        with torch.no_grad():
            s = (
                model(input_ids=torch.tensor([tok(render_prompt(tok, x), add_special_tokens=False)["input_ids"]]))
                .logits[0, -1]
                .log_softmax(-1)
            )
            t = (
                model(
                    input_ids=torch.tensor(
                        [tok(render_prompt(tok, teacher_user_text(x, feedback)), add_special_tokens=False)["input_ids"]]
                    )
                )
                .logits[0, -1]
                .log_softmax(-1)
            )
        total += float((s.exp() * (s - t)).sum())
    return total / len(HELD_OUT)


def sdpo_rows(feedback):
    return [
        {"id": f"{topic}-{answer}", "x": f"topic {topic}", "y": ANSWERS[answer], "feedback": feedback}
        for topic in TRAIN_TOPICS
        for answer in ANSWERS
    ]


def run_round(base, tok, feedback, loss_type="token", steps=40, teacher="ema"):
    """EMA teacher: at this learning rate a live teacher is dragged along by the student's own update (the
    clipped negative advantages of the disfavoured answer push mass onto junk tokens in both contexts)."""
    model = attach_lora(copy.deepcopy(base), rank=8, alpha=16, targets=("q_proj", "v_proj", "o_proj"))
    cfg = TrainConfig(
        steps=steps, lr=3e-3, rank=8, alpha=16, loss_type=loss_type, batch_size=4, seed=0, teacher=teacher
    )
    result = train(model, tok, sdpo_rows(feedback), cfg)
    return model, result


def test_phase_a_made_an_in_context_learner(in_context_learner):
    tok, model = in_context_learner
    for topic in HELD_OUT:
        assert p_first(model, tok, teacher_user_text(f"topic {topic}", "likes alpha")) > 0.9
        assert 0.3 < p_first(model, tok, f"topic {topic}") < 0.7


def test_feedback_preference_moves_the_student_without_feedback_and_irrelevant_feedback_does_not(in_context_learner):
    tok, base = in_context_learner
    before = sum(p_first(base, tok, f"topic {t}") for t in HELD_OUT) / len(HELD_OUT)
    kl_before = held_out_kl(base, tok, "likes alpha")

    trained, result = run_round(base, tok, "likes alpha")
    after = sum(p_first(trained, tok, f"topic {t}") for t in HELD_OUT) / len(HELD_OUT)
    assert after > 0.8 and after - before > 0.25, (before, after)
    assert held_out_kl(trained, tok, "likes alpha") < 0.3 * kl_before
    assert result.examples_used == 2 * len(TRAIN_TOPICS)

    control, _ = run_round(base, tok, "none")
    moved = sum(p_first(control, tok, f"topic {t}") for t in HELD_OUT) / len(HELD_OUT)
    assert abs(moved - before) < 0.1, (before, moved)


def test_logit_level_loss_falls_over_steps(in_context_learner):
    tok, base = in_context_learner
    _, result = run_round(base, tok, "likes alpha", loss_type="logit-rkl", steps=30, teacher="live")
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.3 * first, (first, last)
