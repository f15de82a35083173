"""SDPO losses, from response logits to one scalar.

Notation: p_t = student distribution at response position t (context WITHOUT the feedback, carries the
gradient), q_t = teacher distribution (same response prefix, context WITH the feedback, stop-gradient).

* token (the NanoResearch per-user recipe): advantage A_t = log q_t(y_t) - log p_t(y_t), detached
  and clipped to [-clip, clip]; loss = -mean_t A_t * log p_t(y_t) over scored tokens. Its gradient is the
  sampled-token policy-gradient estimate of grad KL(p_t || q_t).
* logit-rkl / logit-jsd / logit-fkl: a divergence per position over a support of tokens plus one tail bucket
  holding the remaining mass (exact when the support covers the vocabulary): reverse KL(p || q), the
  Jensen-Shannon divergence, or forward KL(q || p). The support is the union of the student's and the teacher's
  top-k. The teacher's top-k matters when feedback asks for words the student never writes: their p_t is tiny,
  and the gradient of KL(p || q) or of the JSD with respect to a token's logit is proportional to its p_t, so
  only forward KL, whose gradient is p_t - q_t, pulls them up at the pace the teacher asks for.
  logit-fkl is the trainer's default (config.py says why).

Only scored tokens count: the mask is 0 for padding and for rows without feedback, so such rows contribute
exactly zero loss and zero gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("token", "logit-rkl", "logit-jsd", "logit-fkl")
# The log-probability given to a repeated support entry: exp() of it is exactly 0 in float32 and float64, so the
# entry holds no mass, yet it is finite, so p * (s - t) and its gradient are 0 rather than NaN.
LOG_EMPTY = -1e4


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, differentiable w.r.t. the student logits
    mean_advantage: float  # mean over scored tokens of the unclipped log q(y_t) - log p(y_t)
    scored_tokens: int


def response_logits(model: torch.nn.Module, batch, *, keep_all: bool = False, prefix=None) -> torch.Tensor:
    """Logits predicting the R response tokens: rows [:, P-1 : P+R-1] of the sequence, as float32+. `prefix`: the
    keys and values of the sequence's first tokens (prefix_states), which are then not computed again; the same
    logits as without it (an unpadded batch only)."""
    kwargs = dict(input_ids=batch.input_ids, use_cache=False)
    if prefix is not None:
        from transformers import DynamicCache  # each call its own cache object: the forward appends to it

        kwargs.update(
            input_ids=batch.input_ids[:, prefix[0][0].shape[-2] :],
            cache=DynamicCache(ddp_cache_data=prefix),
            use_cache=True,
        )
    elif not bool(batch.attention_mask.all()):
        # Padding: mask it and count positions over real tokens. Without padding the default positions are the
        # same and no mask lets attention take its causal fast path.
        kwargs.update(attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    if not keep_all:
        kwargs["logits_to_keep"] = batch.response_len + 1  # skip the vocabulary projection of the prompt
    logits = model(**kwargs).logits
    logits = logits[:, -batch.response_len - 1 : -1, :]
    return logits if logits.dtype == torch.float64 else logits.float()


def prefix_states(model: torch.nn.Module, input_ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every layer's keys and values over `input_ids` [B, L] (no padding), for response_logits(prefix=...), in the
    autograd graph when grad is on. The model must pass reuses_prefix."""
    cache = model(input_ids=input_ids, use_cache=True, logits_to_keep=1).cache
    return [(layer.keys, layer.values) for layer in cache.layers]


def reuses_prefix(model: torch.nn.Module) -> bool:
    """Whether the model's cache is plain keys and values per layer, which a later pass can take as its prefix
    (not a sliding window, which drops the earliest ones)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    layers = DynamicCache(config=model.config).layers
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def token_logprobs(logprobs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return logprobs.gather(-1, targets[..., None]).squeeze(-1)


def with_tail(logprobs: torch.Tensor) -> torch.Tensor:
    """Append log(1 - sum(exp(logprobs))): the mass outside the kept support, as one more bucket."""
    kept = torch.logsumexp(logprobs, -1, keepdim=True).clamp(max=-1e-7)
    return torch.cat([logprobs, torch.log(-torch.expm1(kept))], -1)


def union_support(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the student's and the teacher's top-k tokens per position, sorted, [..., 2k], and a mask of the
    entries that repeat the one before (a token in both top-k lists)."""
    k = min(k, student_logits.shape[-1])
    both = torch.cat([student_logits.detach().topk(k, dim=-1).indices, teacher_logits.topk(k, dim=-1).indices], -1)
    indices = both.sort(-1).values
    repeat = torch.zeros_like(indices, dtype=torch.bool)
    repeat[..., 1:] = indices[..., 1:] == indices[..., :-1]
    return indices, repeat


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
        support, repeat = union_support(student_logits, teacher_logits, topk)
        s_k = with_tail(s_lp.gather(-1, support).masked_fill(repeat, LOG_EMPTY))
        t_k = with_tail(t_lp.gather(-1, support).masked_fill(repeat, LOG_EMPTY))
        if loss_type == "logit-rkl":
            per_token = reverse_kl(s_k, t_k)
        elif loss_type == "logit-fkl":
            per_token = reverse_kl(t_k, s_k)  # KL(q || p)
        else:
            per_token = jensen_shannon(s_k, t_k)

    mask = mask.to(per_token.dtype)
    count = mask.sum()
    # where(), not multiplication: a masked position must not leak NaN/inf into the sum or the gradient.
    total = torch.where(mask > 0, per_token, torch.zeros_like(per_token)).sum()
    loss = total / count.clamp(min=1.0)
    mean_adv = float(torch.where(mask > 0, advantage, torch.zeros_like(advantage)).sum() / count.clamp(min=1.0))
    return LossOutput(loss, mean_adv, int(count))
