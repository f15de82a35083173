"""Adapter folders on disk: writing one (PEFT safetensors + GGUF LoRA + manifest, atomically) and reading one
back (its PEFT weights onto a base model, its manifest).

A trainer output folder DIR holds peft/ (the PEFT adapter), adapter.gguf (llama.cpp's LoRA adapter format) and
manifest.json (schema/adapter-manifest.schema.json; file paths relative to DIR). It is written into
DIR.tmp-<pid>, fsynced and renamed onto DIR, so a killed run leaves the previous DIR intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .data import load_schema
from .export_gguf import export_peft_model

PEFT_DIR = "peft"
GGUF_FILE = "adapter.gguf"
MANIFEST_FILE = "manifest.json"


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def validate_manifest(manifest: dict[str, Any]) -> None:
    import jsonschema

    jsonschema.Draft202012Validator(
        load_schema("adapter-manifest.schema.json"), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(manifest)


def peft_dir_of(adapter: str | os.PathLike[str]) -> Path:
    """Accept a trainer output folder (holding peft/) or a bare PEFT adapter folder."""
    path = Path(adapter)
    if (path / PEFT_DIR / "adapter_config.json").is_file():
        return path / PEFT_DIR
    if (path / "adapter_config.json").is_file():
        return path
    raise FileNotFoundError(
        f"{path} holds no PEFT adapter (adapter_config.json); pass a trainer output folder "
        "or a PEFT adapter folder to --adapter-in"
    )


def read_manifest(adapter: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of a trainer output folder; None for a bare PEFT folder (it has none)."""
    path = Path(adapter) / MANIFEST_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def load_adapter(model: torch.nn.Module, adapter: str | os.PathLike[str], *, trainable: bool) -> torch.nn.Module:
    """The base model with the adapter's PEFT weights attached (a PeftModel); trainable to continue training."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(peft_dir_of(adapter)), is_trainable=trainable)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out: Path) -> None:
    """Leftovers of killed runs (DIR.tmp-<pid> whose process is gone)."""
    for leftover in out.parent.glob(f"{out.name}.tmp-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def save_adapter(
    model: torch.nn.Module,
    out: str | os.PathLike[str],
    manifest: dict[str, Any],
    base: str | os.PathLike[str] | None = None,
) -> Path:
    """Write peft/ (safetensors), adapter.gguf and manifest.json into DIR.tmp-<pid>, fsync, then rename onto
    DIR. Until the final rename the previous DIR is untouched, so a killed run leaves it intact (and its DIR.tmp-<pid>,
    which remove_stale_temporaries clears on the next run)."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        model.save_pretrained(str(tmp / PEFT_DIR), safe_serialization=True)
        export_peft_model(model, tmp / GGUF_FILE, base)
        manifest = {**manifest, "files": {"peft_dir": PEFT_DIR, "gguf": GGUF_FILE}}
        validate_manifest(manifest)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed save leaves nothing beside DIR (a killed one: see above)
        raise
    if out.exists():
        old = out.parent / f"{out.name}.old-{os.getpid()}"
        os.rename(out, old)  # the only window without DIR is between these two renames
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)
    _fsync_dir(out.parent)
    return out
