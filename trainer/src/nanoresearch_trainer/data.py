"""Training rows: reading and validating the JSONL history, building the two contexts, tokenising and packing.

One row is (x, y, feedback). x is the planner's prompt exactly as the planner model was given it: the whole
text after the chat template (system message included, up to and including the assistant header, special
tokens written out) -- the kernel library stores that for its embedded planner. The student context is x
itself, tokenised back to the very ids the model evaluated. The teacher context is the same rendering with
the feedback block inserted at ONE place: the end of the last user message's content, i.e. just before the
template's end-of-turn + assistant header (`generation_suffix`), so causal attention lets every response
token see it. An x that is not a rendering (a row from an OpenAI-compatible server, or an older store) is
the user message itself; it is rendered here as the one user turn, and the feedback goes to the same place.

The response y is tokenised ONCE and the same ids are appended to both contexts, so response token j sits at
the same column of the student and the teacher batch (left-padded prompts, right-padded responses).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# Appended to the last user turn of the teacher context (sdpo.md §2.8: many chat templates reject two
# consecutive user turns, and the feedback must precede the assistant header).
FEEDBACK_TEMPLATE = (
    "\n\n[USER FEEDBACK ON A PREVIOUS ANSWER TO THIS REQUEST]\n{feedback}\n[END FEEDBACK]\n"
    "Take this feedback into account in your answer."
)


class DataError(ValueError):
    """A training file or row that cannot be used; the message says which line and why."""


def find_schema_dir() -> Path:
    """NANORESEARCH_SCHEMA_DIR, else the repository's schema/ folder above this package."""
    env = os.environ.get("NANORESEARCH_SCHEMA_DIR")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "schema" / "sdpo-example.schema.json"
        if candidate.is_file():
            return candidate.parent
    raise DataError(
        "cannot find schema/sdpo-example.schema.json above the trainer package; "
        "set NANORESEARCH_SCHEMA_DIR to the repository's schema/ folder"
    )


def load_schema(name: str) -> dict[str, Any]:
    return json.loads((find_schema_dir() / name).read_text(encoding="utf-8"))


def schema_validator(name: str) -> Any:
    """A Draft 2020-12 validator of the named schema whose cross-file `$ref`s (e.g. the stage list,
    stage.schema.json) resolve to the files beside it by `$id`, never fetched over the network."""
    import jsonschema
    from referencing import Registry, Resource

    files = sorted(find_schema_dir().glob("*.schema.json"))
    registry = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema))
        for schema in (json.loads(f.read_text(encoding="utf-8")) for f in files)
    )
    return jsonschema.Draft202012Validator(
        load_schema(name), registry=registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def read_examples(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], str]:
    """Read and validate every row of a JSONL file; returns (rows, sha256 of the file bytes)."""
    raw = Path(path).read_bytes()
    validator = schema_validator("sdpo-example.schema.json")
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})") from None
        errors = sorted(validator.iter_errors(row), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "(row)"
            raise DataError(
                f"{path}:{number}: row does not match sdpo-example.schema.json at {where}: {errors[0].message}"
            )
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no training rows (the file is empty)")
    return rows, hashlib.sha256(raw).hexdigest()


def has_feedback(row: dict[str, Any]) -> bool:
    return bool(str(row.get("feedback") or "").strip())


def rows_with_feedback(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that carry a signal (a row without feedback would add exactly zero loss and gradient)."""
    kept = [row for row in rows if has_feedback(row)]
    if not kept:
        raise DataError(f"none of the {len(rows)} rows has feedback: there is nothing to learn from")
    return kept


def teacher_user_text(x: str, feedback: str) -> str:
    return x + FEEDBACK_TEMPLATE.format(feedback=feedback.strip())


def render_prompt(tokenizer: Any, user_text: str, system: str | None = None) -> str:
    """The prompt text up to and including the assistant header for one user turn (and a system message)."""
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": user_text}
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return (system + "\n\n" if system else "") + user_text + "\n"


_MARKER = "\u241eNANORESEARCH_USER_TEXT\u241e"


def generation_suffix(tokenizer: Any) -> str:
    """What the chat template writes after the last user message's content: its end-of-turn and the assistant
    header (SmolLM2: "<|im_end|>\\n<|im_start|>assistant\\n"). The feedback block is inserted right before it."""
    rendered = render_prompt(tokenizer, _MARKER, system="S")
    return rendered[rendered.index(_MARKER) + len(_MARKER) :]


def is_rendered(tokenizer: Any, x: str) -> bool:
    """Whether x is a whole rendered prompt (ends with the template's generation suffix) or a bare user message."""
    suffix = generation_suffix(tokenizer)
    return bool(suffix.strip()) and x.endswith(suffix)


def student_prompt_text(tokenizer: Any, x: str) -> str:
    return x if is_rendered(tokenizer, x) else render_prompt(tokenizer, x)


def teacher_prompt_text(tokenizer: Any, x: str, feedback: str) -> str:
    """The student's prompt with the feedback block at the end of the last user message's content."""
    if not is_rendered(tokenizer, x):
        return render_prompt(tokenizer, teacher_user_text(x, feedback))
    suffix = generation_suffix(tokenizer)
    return x[: len(x) - len(suffix)] + FEEDBACK_TEMPLATE.format(feedback=feedback.strip()) + suffix


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of text as it stands: special tokens written in it (e.g. '<|im_start|>') become their ids, and
    nothing is added (no BOS): a rendered x carries every token the model saw."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass
class Encoded:
    """One row as token ids: both prompts, the shared response, and whether the row carries a signal."""

    student_prompt: list[int]
    teacher_prompt: list[int]
    response: list[int]
    scored: bool


def encode_row(tokenizer: Any, row: dict[str, Any], max_len: int, max_response: int) -> Encoded:
    """Tokenise one row. The response is cut to its first max_response tokens (the scored prefix keeps its
    exact causal context); prompts are left-truncated so prompt + response fits max_len."""
    encode = lambda text: encode_text(tokenizer, text)  # noqa: E731
    response = encode(row["y"])
    if tokenizer.eos_token_id is not None:
        response = response + [tokenizer.eos_token_id]  # the planner emitted end-of-turn: train the stop too
    response = response[:max_response]
    if max_len - len(response) < 1:
        raise DataError(f"--max-len {max_len} leaves no room for a prompt next to a {len(response)}-token response")
    keep = max_len - len(response)
    scored = has_feedback(row)
    student = encode(student_prompt_text(tokenizer, row["x"]))
    teacher = encode(teacher_prompt_text(tokenizer, row["x"], row["feedback"])) if scored else student
    return Encoded(student[-keep:], teacher[-keep:], response, scored)


@dataclass
class Batch:
    """Left-padded prompts + right-padded responses; response token j of every row is at column P + j."""

    input_ids: torch.Tensor  # [B, P + R]
    attention_mask: torch.Tensor  # [B, P + R]
    position_ids: torch.Tensor  # [B, P + R], counted over real tokens only
    response_len: int  # R

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device), self.attention_mask.to(device), self.position_ids.to(device), self.response_len
        )

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())


def pack(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int) -> Batch:
    width_p, width_r = max(map(len, prompts)), max(map(len, responses))
    ids = torch.full((len(prompts), width_p + width_r), pad_id, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        ids[i, width_p - len(p) : width_p] = torch.tensor(p, dtype=torch.long)
        ids[i, width_p : width_p + len(r)] = torch.tensor(r, dtype=torch.long)
        att[i, width_p - len(p) : width_p + len(r)] = 1
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    return Batch(ids, att, pos, width_r)


def pack_pair(rows: Sequence[Encoded], pad_id: int) -> tuple[Batch, Batch, torch.Tensor, torch.Tensor]:
    """Student batch, teacher batch, response targets [B, R] and the scored-token mask [B, R]."""
    responses = [r.response for r in rows]
    student = pack([r.student_prompt for r in rows], responses, pad_id)
    teacher = pack([r.teacher_prompt for r in rows], responses, pad_id)
    width_r = student.response_len
    targets = student.input_ids[:, -width_r:]
    lengths = torch.tensor([len(r) for r in responses])
    mask = (torch.arange(width_r)[None, :] < lengths[:, None]).float()  # from lengths: pad may equal eos
    mask = mask * torch.tensor([float(r.scored) for r in rows])[:, None]
    return student, teacher, targets, mask
