"""The SDPO loss: masking, alignment of the scored positions, gradients."""

from __future__ import annotations

import pytest
import torch

from nanoresearch_trainer.data import encode_row, pack_pair
from nanoresearch_trainer.loss import (
    LOSS_TYPES,
    jensen_shannon,
    response_logits,
    reverse_kl,
    sdpo_loss,
    token_logprobs,
    with_tail,
)
from nanoresearch_trainer.model import attach_lora, lora_parameters
from nanoresearch_trainer.train import TeacherWeights, TrainConfig, score_batch, shared_prefix

ROWS = [
    {"id": "r0", "x": "topic t1 filler filler", "y": "A a1 a2", "feedback": "likes A"},
    {"id": "r1", "x": "topic t2", "y": "B b1 b2 b3 b1", "feedback": "likes B likes B likes B"},
    {"id": "r2", "x": "topic t3 " + "filler " * 9, "y": "a1", "feedback": "none"},
]


def randomised_lora(model, seed=1):
    """LoRA with non-zero B, so the adapter actually changes the model (B is zero at init)."""
    peft_model = attach_lora(model, rank=4, alpha=8)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(peft_model).values():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
    return peft_model


def in_float64(model):
    """The model in float64 end to end: LlamaRMSNorm upcasts to float32 internally, which would bury a
    finite difference of 1e-6 in rounding noise, so its forward is replaced by the same formula in float64."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    model = model.double()
    for module in model.modules():
        if isinstance(module, LlamaRMSNorm):

            def forward(hidden, norm=module):
                variance = hidden.pow(2).mean(-1, keepdim=True)
                return norm.weight * hidden * torch.rsqrt(variance + norm.variance_epsilon)

            module.forward = forward
    return model


def reference_logprobs(model, prompt, response):
    """Unbatched, unpadded: log p(response_j | prompt, response_<j) from one plain forward."""
    ids = torch.tensor([prompt + response])
    logits = model(input_ids=ids, use_cache=False).logits[0].double()
    lp = logits.log_softmax(-1)[len(prompt) - 1 : len(prompt) - 1 + len(response)]
    return lp.gather(-1, torch.tensor(response)[:, None]).squeeze(-1)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("teacher_kind", ["live", "ema", "base"])
def test_empty_feedback_gives_zero_loss_and_zero_gradient(tok, tiny, loss_type, teacher_kind):
    model = randomised_lora(tiny)
    teacher = TeacherWeights(model, teacher_kind, 0.5)
    if teacher_kind == "ema":  # a stale EMA teacher must still not pull rows without feedback
        with torch.no_grad():
            for p in teacher.ema.values():
                p.mul_(-1.0)
    rows = [dict(r, feedback=fb) for r, fb in zip(ROWS, ["", "   ", ""], strict=True)]
    encoded = [encode_row(tok, r, 64, 16) for r in rows]
    assert not any(e.scored for e in encoded)
    out, _ = score_batch(model, encoded, tok.pad_token_id, TrainConfig(loss_type=loss_type), teacher, "cpu")
    out.loss.backward()
    assert out.loss.item() == 0.0 and out.scored_tokens == 0
    grads = [p.grad for p in lora_parameters(model).values()]
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)


def test_base_teacher_scores_with_the_adapter_off_and_leaves_it_on(tok, tiny):
    ids = torch.tensor([tok("topic t1 filler filler", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        plain = tiny(input_ids=ids).logits
        model = randomised_lora(tiny)
        tuned = model(input_ids=ids).logits
        with TeacherWeights(model, "base", 0.0).active():
            teacher = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert not torch.allclose(tuned, plain, atol=1e-3)  # the adapter changes the model...
    assert torch.allclose(teacher, plain, atol=1e-5)  # ...the base teacher does not see it...
    assert torch.equal(after, tuned)  # ...and the student has it back after the teacher pass


def test_masked_row_contributes_nothing_next_to_a_scored_row(tok, tiny):
    model = randomised_lora(tiny)
    teacher = TeacherWeights(model, "live", 0.0)
    cfg = TrainConfig(loss_type="token")
    alone = [encode_row(tok, ROWS[0], 64, 16)]
    mixed = alone + [encode_row(tok, dict(ROWS[1], feedback=""), 64, 16)]
    a, _ = score_batch(model, alone, 0, cfg, teacher, "cpu")
    b, _ = score_batch(model, mixed, 0, cfg, teacher, "cpu")
    assert a.scored_tokens == b.scored_tokens == 4  # "A a1 a2" + eos
    assert torch.allclose(a.loss, b.loss, atol=1e-6)


def test_scored_positions_align_under_padding_and_left_truncation(tok, tiny):
    model = randomised_lora(tiny).double()
    max_len = 14  # forces left-truncation of the longer prompts (teacher prompts most of all)
    encoded = [encode_row(tok, r, max_len, 16) for r in ROWS]
    assert any(len(e.teacher_prompt) + len(e.response) == max_len for e in encoded)
    student, teacher, targets, mask = pack_pair(encoded, tok.pad_token_id)
    width = student.response_len
    assert torch.equal(student.input_ids[:, -width:], teacher.input_ids[:, -width:])
    with torch.no_grad():
        s_lp = response_logits(model, student).log_softmax(-1)
        t_lp = response_logits(model, teacher).log_softmax(-1)
    for i, e in enumerate(encoded):
        n = len(e.response)
        assert mask[i, :n].eq(1).all() and mask[i, n:].eq(0).all()
        assert student.input_ids[i, student.input_ids.shape[1] - width] == e.response[0]
        got_s = token_logprobs(s_lp, targets)[i, :n]
        got_t = token_logprobs(t_lp, targets)[i, :n]
        with torch.no_grad():
            want_s = reference_logprobs(model, e.student_prompt, e.response)
            want_t = reference_logprobs(model, e.teacher_prompt, e.response)
        torch.testing.assert_close(got_s, want_s, atol=1e-9, rtol=0)
        torch.testing.assert_close(got_t, want_t, atol=1e-9, rtol=0)


@pytest.mark.parametrize("loss_type", ["token", "logit-fkl"])
def test_live_teacher_reuses_the_prefix_both_contexts_share(tok, tiny, loss_type):
    """One row, the live teacher: the teacher pass runs only the tokens after x's shared opening, and the loss and
    gradient are those of two whole forwards."""
    model = in_float64(randomised_lora(tiny))
    rows = [encode_row(tok, ROWS[2], 64, 16)]
    shared = shared_prefix(rows)
    assert 0 < shared < len(rows[0].student_prompt)
    assert rows[0].teacher_prompt[:shared] == rows[0].student_prompt[:shared]
    cfg = TrainConfig(loss_type=loss_type, topk=5)
    params = lora_parameters(model)

    def gradients(loss):
        model.zero_grad()
        loss.backward()
        return {n: p.grad.clone() for n, p in params.items()}

    seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[1]))
    try:
        reused, _ = score_batch(model, rows, tok.pad_token_id, cfg, TeacherWeights(model, "live", 0.0), "cpu")
    finally:
        hook.remove()
    student, teacher, targets, mask = pack_pair(rows, tok.pad_token_id)
    assert seen == [shared, teacher.input_ids.shape[1] - shared, student.input_ids.shape[1] - shared]
    with torch.no_grad():
        teacher_logits = response_logits(model, teacher)
    whole = sdpo_loss(response_logits(model, student), teacher_logits, targets, mask, loss_type=loss_type, topk=5)
    torch.testing.assert_close(reused.loss, whole.loss, atol=1e-10, rtol=0)
    want = gradients(whole.loss)
    for name, grad in gradients(reused.loss).items():
        torch.testing.assert_close(grad, want[name], atol=1e-10, rtol=0)
    assert shared_prefix(rows * 2) == 0  # several rows: padding would misalign the prefix, so none is shared


def test_response_is_tokenised_once_and_cut_to_max_response(tok):
    row = {"id": "r", "x": "topic t1", "y": "A a1 a2 a3 A a1", "feedback": "likes A"}
    e = encode_row(tok, row, 64, 4)
    assert e.response == tok("A a1 a2 a3", add_special_tokens=False)["input_ids"]
    assert e.teacher_prompt[-1] == e.student_prompt[-1] == tok.convert_tokens_to_ids("<|assistant|>")
    assert tok.convert_tokens_to_ids("likes") in e.teacher_prompt
    assert tok.convert_tokens_to_ids("likes") not in e.student_prompt


@pytest.mark.parametrize("loss_type", ["logit-rkl", "logit-jsd", "logit-fkl"])
def test_logit_loss_gradient_matches_finite_differences(tok, tiny, loss_type):
    model = in_float64(randomised_lora(tiny))
    encoded = [encode_row(tok, r, 64, 16) for r in ROWS]
    student, teacher, targets, mask = pack_pair(encoded, tok.pad_token_id)
    with torch.no_grad():  # the teacher is a constant here, as it is under stop-gradient
        teacher_logits = response_logits(model, teacher)

    def loss_value():
        return sdpo_loss(
            response_logits(model, student), teacher_logits, targets, mask, loss_type=loss_type, topk=5
        ).loss

    model.zero_grad()
    loss_value().backward()
    params = lora_parameters(model)
    picks = [(name, (1, 2)) for name in sorted(params)]  # one entry of every LoRA A and B
    eps = 1e-6
    for name, idx in picks:
        param = params[name]
        analytic = param.grad[idx].item()
        with torch.no_grad():
            original = param[idx].item()
            param[idx] = original + eps
            up = loss_value().item()
            param[idx] = original - eps
            down = loss_value().item()
            param[idx] = original
        numeric = (up - down) / (2 * eps)
        assert abs(analytic - numeric) <= 1e-6 + 1e-4 * abs(numeric), (name, idx, analytic, numeric)


def test_divergences_on_hand_built_distributions():
    torch.manual_seed(0)
    p = torch.randn(7, dtype=torch.float64).log_softmax(-1)
    q = torch.randn(7, dtype=torch.float64).log_softmax(-1)
    full_kl = (p.exp() * (p - q)).sum()
    assert torch.isclose(reverse_kl(p, q), full_kl)
    m = ((p.exp() + q.exp()) / 2).log()
    jsd = 0.5 * (p.exp() * (p - m)).sum() + 0.5 * (q.exp() * (q - m)).sum()
    assert torch.isclose(jensen_shannon(p, q), jsd) and torch.isclose(jensen_shannon(q, p), jsd)
    top = p.topk(6).indices  # k = V - 1: the tail bucket holds exactly the one missing token
    assert torch.isclose(reverse_kl(with_tail(p[top]), with_tail(q[top])), full_kl)


def test_union_support_counts_a_token_once_and_is_exact_when_it_covers_the_vocabulary():
    torch.manual_seed(2)
    student = torch.randn(1, 1, 7, dtype=torch.float64)
    teacher = torch.randn(1, 1, 7, dtype=torch.float64)
    p, q = student.log_softmax(-1)[0, 0], teacher.log_softmax(-1)[0, 0]
    expected = {"logit-rkl": reverse_kl(p, q), "logit-fkl": reverse_kl(q, p), "logit-jsd": jensen_shannon(p, q)}
    for loss_type, value in expected.items():
        # Both top-7 lists hold every token: counted twice, the support would hold a mass of 2.
        out = sdpo_loss(student, teacher, torch.tensor([[0]]), torch.ones(1, 1), loss_type=loss_type, topk=7)
        assert out.loss.item() == pytest.approx(value.item(), abs=1e-6), loss_type


def test_forward_kl_pulls_up_the_teachers_word_the_student_never_writes():
    """Token 5 is the teacher's favourite and far outside the student's top-2: the union support holds it, and
    only forward KL's gradient on its logit is of the size of the teacher's preference."""
    student = torch.tensor([[[1.0, 0.5, 0.0, 0.0, 0.0, -8.0]]], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([[[0.0, 0.0, 0.0, 0.0, 0.0, 5.0]]], dtype=torch.float64)
    grads = {}
    for loss_type in ("logit-fkl", "logit-rkl", "logit-jsd"):
        out = sdpo_loss(student, teacher, torch.tensor([[0]]), torch.ones(1, 1), loss_type=loss_type, topk=2)
        (grads[loss_type],) = torch.autograd.grad(out.loss, student)
    p5, q5 = student.detach().softmax(-1)[0, 0, 5].item(), teacher.softmax(-1)[0, 0, 5].item()
    assert grads["logit-fkl"][0, 0, 5].item() == pytest.approx(p5 - q5, abs=1e-6)  # about -0.97
    assert abs(grads["logit-rkl"][0, 0, 5].item()) < 0.01 and abs(grads["logit-jsd"][0, 0, 5].item()) < 0.01


def test_token_surrogate_is_an_unbiased_estimate_of_the_reverse_kl_gradient():
    """Sum over y of p(y) * grad[-sg(A(y)) * log p(y)] equals grad KL(p || q) (one position, no clipping)."""
    torch.manual_seed(1)
    logits = torch.randn(1, 1, 6, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(1, 1, 6, dtype=torch.float64)
    expected = torch.zeros_like(logits)
    probs = logits.detach().softmax(-1)[0, 0]
    for v in range(6):
        (grad,) = torch.autograd.grad(
            sdpo_loss(logits, teacher, torch.tensor([[v]]), torch.ones(1, 1), loss_type="token", clip=1e9).loss, logits
        )
        expected += probs[v] * grad
    (kl_grad,) = torch.autograd.grad(reverse_kl(logits.log_softmax(-1), teacher.log_softmax(-1)).sum(), logits)
    torch.testing.assert_close(expected, kl_grad)


def test_token_advantage_is_clipped():
    logits = torch.tensor([[[-30.0, 0.0, 0.0, 0.0]]], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([[[30.0, 0.0, 0.0, 0.0]]], dtype=torch.float64)
    out = sdpo_loss(logits, teacher, torch.tensor([[0]]), torch.ones(1, 1), loss_type="token", clip=5.0)
    student_lp = logits.detach().log_softmax(-1)[0, 0, 0].item()
    assert out.mean_advantage == pytest.approx(-student_lp, abs=1e-6)  # reported unclipped (about 31)
    assert out.loss.item() == pytest.approx(-5.0 * student_lp)
