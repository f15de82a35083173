"""SDPO losses, from response logits to one scalar.

Notation: p_t = student distribution at response position t (context WITHOUT the feedback, carries the
gradient), q_t = teacher distribution (same response prefix, context WITH the feedback, stop-gradient).

* token (default, the NanoResearch per-user recipe): advantage A_t = log q_t(y_t) - log p_t(y_t), detached
  and clipped to [-clip, clip]; loss = -mean_t A_t * log p_t(y_t) over scored tokens. Its gradient is the
  sampled-token policy-gradient estimate of grad KL(p_t || q_t).
* logit-rkl / logit-jsd: the divergence over the student's top-k tokens plus one tail bucket holding the
  remaining mass (exact when k covers the vocabulary): reverse KL(p || q) or the Jensen-Shannon divergence.

Only scored tokens count: the mask is 0 for padding and for rows without feedback, so such rows contribute
exactly zero loss and zero gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("token", "logit-rkl", "logit-jsd")


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, differentiable w.r.t. the student logits
    mean_advantage: float  # mean over scored tokens of the unclipped log q(y_t) - log p(y_t)
    scored_tokens: int


def response_logits(model: torch.nn.Module, batch, *, keep_all: bool = False) -> torch.Tensor:
    """Logits predicting the R response tokens: rows [:, P-1 : P+R-1] of the sequence, as float32+."""
    kwargs = dict(input_ids=batch.input_ids, use_cache=False)
    if not bool(batch.attention_mask.all()):
        # Padding: mask it and count positions over real tokens. Without padding the default positions are the
        # same and no mask lets attention take its causal fast path.
        kwargs.update(attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    if not keep_all:
        kwargs["logits_to_keep"] = batch.response_len + 1  # skip the vocabulary projection of the prompt
    logits = model(**kwargs).logits
    logits = logits[:, -batch.response_len - 1 : -1, :]
    return logits if logits.dtype == torch.float64 else logits.float()


def token_logprobs(logprobs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return logprobs.gather(-1, targets[..., None]).squeeze(-1)


def with_tail(logprobs: torch.Tensor) -> torch.Tensor:
    """Append log(1 - sum(exp(logprobs))): the mass outside the kept support, as one more bucket."""
    kept = torch.logsumexp(logprobs, -1, keepdim=True).clamp(max=-1e-7)
    return torch.cat([logprobs, torch.log(-torch.expm1(kept))], -1)


def reverse_kl(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per position from log-probabilities s = log p, t = log q."""
    return (s.exp() * (s - t)).sum(-1)


def jensen_shannon(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """JSD(p, q) = KL(p || m)/2 + KL(q || m)/2 with m = (p + q)/2."""
    half = torch.log(torch.tensor(0.5, dtype=s.dtype, device=s.device))
    log_m = torch.logaddexp(s + half, t + half)
    return 0.5 * (s.exp() * (s - log_m)).sum(-1) + 0.5 * (t.exp() * (t - log_m)).sum(-1)


def sdpo_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: str = "token",
    clip: float = 5.0,
    topk: int = 20,
) -> LossOutput:
    """student_logits, teacher_logits: [B, R, V] at the response positions; targets, mask: [B, R]."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss type {loss_type!r}; use one of {', '.join(LOSS_TYPES)}")
    teacher_logits = teacher_logits.detach()
    s_lp = student_logits.log_softmax(-1)
    t_lp = teacher_logits.log_softmax(-1)
    s_tok, t_tok = token_logprobs(s_lp, targets), token_logprobs(t_lp, targets)
    advantage = (t_tok - s_tok).detach()

    if loss_type == "token":
        per_token = -advantage.clamp(-clip, clip) * s_tok
    else:
        support = student_logits.detach().topk(min(topk, student_logits.shape[-1]), dim=-1).indices
        s_k, t_k = with_tail(s_lp.gather(-1, support)), with_tail(t_lp.gather(-1, support))
        per_token = reverse_kl(s_k, t_k) if loss_type == "logit-rkl" else jensen_shannon(s_k, t_k)

    mask = mask.to(per_token.dtype)
    count = mask.sum()
    # where(), not multiplication: a masked position must not leak NaN/inf into the sum or the gradient.
    total = torch.where(mask > 0, per_token, torch.zeros_like(per_token)).sum()
    loss = total / count.clamp(min=1.0)
    mean_adv = float(torch.where(mask > 0, advantage, torch.zeros_like(advantage)).sum() / count.clamp(min=1.0))
    return LossOutput(loss, mean_adv, int(count))
