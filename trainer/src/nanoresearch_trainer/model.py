"""Loading the base model (a GGUF file or a Hugging Face folder, never the hub) and its LoRA adapter."""

from __future__ import annotations

import gc
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from .adapter_io import load_adapter, pid_alive
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
    """Model + tokenizer from a .gguf file (dequantised by transformers once, then read from its dequantised
    copy: see `dequantized_copy`) or a local HF folder. bf16 on GPU."""
    path = Path(base)
    if not path.exists():
        raise FileNotFoundError(
            f"base model {path} does not exist; pass --base PATH to a .gguf file or a Hugging Face model folder"
        )
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    copy = dequantized_copy(path, dtype) if path.is_file() else None
    if path.is_file() and (copy is None or not (copy / COPY_COMPLETE).is_file()):
        model, tokenizer = _from_pretrained(str(path.parent), dtype, gguf_file=path.name)
        if copy is None or not keep_dequantized(model, tokenizer, path, copy):
            return model.to(device), tokenizer
        del model
        gc.collect()
    model, tokenizer = _from_pretrained(str(copy or path), dtype)
    return model.to(device), tokenizer


def _from_pretrained(where: str, dtype: torch.dtype, **extra: Any) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True, **extra)
    model = AutoModelForCausalLM.from_pretrained(where, local_files_only=True, dtype=dtype, **extra)
    if "gguf_file" in extra:
        # transformers marks a GGUF-loaded model as quantised (and refuses to save it), but its tensors are plain
        # dequantised ones by now: without the mark it is the same model as its dequantised copy loads as.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


# Dequantising a GGUF costs a round most of its time on a CPU (the 1.5B planner: 12 s for the tokenizer, 60 s
# for the weights, against under a second to map the saved copy), and every round and every scoring call
# starts a new process. So the first load writes the dequantised weights and the tokenizer as a Hugging Face
# folder beside the file, and every later load, the first one's own included, reads that folder: all rounds
# train on the same tensors and token ids (tests/test_model.py checks both against the GGUF path).
COPY_ENV = "NANORESEARCH_DEQUANTIZED_DIR"
COPY_COMPLETE = "complete"


def dequantized_copy(gguf: Path, dtype: torch.dtype) -> Path | None:
    """The folder of `gguf`'s dequantised copy: under $NANORESEARCH_DEQUANTIZED_DIR (`off`: no copy), else
    `.dequantized/` beside the file. The name holds the file's size and modification time, so a replaced
    file gets a new copy."""
    setting = os.environ.get(COPY_ENV)
    if setting == "off":
        return None
    root = Path(setting) if setting else gguf.parent / ".dequantized"
    stat = gguf.stat()
    return root / f"{gguf.name}-{stat.st_size}-{stat.st_mtime_ns}-{str(dtype).removeprefix('torch.')}"


def keep_dequantized(model: torch.nn.Module, tokenizer: Any, gguf: Path, copy: Path) -> bool:
    """Saves `gguf`'s dequantised model as `copy`, written aside and renamed into place, so that a crash or a
    second process never leaves a half copy that looks whole; older copies of the same file go. A copy that
    cannot be written (read-only folder, full disk) is only a warning: this round uses the model it has."""
    root = copy.parent
    scratch = root / f".{copy.name}.{os.getpid()}.partial"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(root, gguf.name, keep=copy)
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        (scratch / COPY_COMPLETE).write_text(f"{gguf.resolve()}\n")
        try:
            scratch.rename(copy)
        except OSError:
            if not (copy / COPY_COMPLETE).is_file():  # not another process that finished first
                raise
        return True
    except OSError as err:
        print(
            f"warning: could not keep a dequantised copy of {gguf.name} in {root} ({err}); the next round "
            f"dequantises it again. Free space there, or set {COPY_ENV} to a writable folder (or to off).",
            file=sys.stderr,
        )
        return False
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _remove_abandoned(root: Path, name: str, keep: Path) -> None:
    """Copies of an earlier version of the file, and partial copies whose process is gone."""
    for entry in root.iterdir():
        if entry.name.endswith(".partial"):
            pid = entry.name.rsplit(".", 2)[-2]
            if not (pid.isdigit() and pid_alive(int(pid))):
                shutil.rmtree(entry, ignore_errors=True)
        elif entry != keep and entry.name.startswith(f"{name}-"):
            shutil.rmtree(entry, ignore_errors=True)


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
