"""Loading the base model (a GGUF file or a Hugging Face folder, never the hub) and its LoRA adapter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .adapter_io import load_adapter
from .config import DEFAULT_TARGETS

DEFAULT_BASE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_base() -> Path:
    """The embedded planner model: <repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf (NANORESEARCH_MODELS_DIR overrides)."""
    env = os.environ.get("NANORESEARCH_MODELS_DIR")
    if env:
        return Path(env) / DEFAULT_BASE_NAME
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "models" / DEFAULT_BASE_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"cannot find models/{DEFAULT_BASE_NAME} above the trainer package; run scripts/setup "
        "or pass --base PATH (a .gguf file or a Hugging Face model folder)"
    )


def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_base(base: str | os.PathLike[str], device: torch.device) -> tuple[torch.nn.Module, Any]:
    """Model + tokenizer from a .gguf file (dequantised by transformers) or a local HF folder. bf16 on GPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(base)
    if not path.exists():
        raise FileNotFoundError(
            f"base model {path} does not exist; pass --base PATH to a .gguf file or a Hugging Face model folder"
        )
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if path.is_file():
        where, extra = str(path.parent), {"gguf_file": path.name}
    else:
        where, extra = str(path), {}
    tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True, **extra)
    model = AutoModelForCausalLM.from_pretrained(where, local_files_only=True, dtype=dtype, **extra)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    return model, tokenizer


def attach_lora(
    model: torch.nn.Module,
    *,
    rank: int,
    alpha: float,
    targets=DEFAULT_TARGETS,
    adapter_in: str | os.PathLike[str] | None = None,
) -> torch.nn.Module:
    """A fresh LoRA (B = 0, so training starts from the base model) or a previous round's adapter, trainable."""
    from peft import LoraConfig, get_peft_model

    if adapter_in is not None:
        return load_adapter(model, adapter_in, trainable=True)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets), bias="none", task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)


def lora_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if "lora_" in n and p.requires_grad}
