"""PEFT LoRA -> GGUF LoRA adapter that llama.cpp (and node-llama-cpp) load next to the base GGUF.

llama.cpp's converter permutes the rows of the Llama q and k projections (it interleaves the two rotary
halves of every head); transformers undoes that when it loads a Llama GGUF. A LoRA delta B @ A acts on the
same output rows, so B of q_proj/k_proj must get the converter's permutation before it is written, or the
adapter would add its update to the wrong rows of the base GGUF's weights. A has input columns only and
needs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

HF_TO_GGUF = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
PEFT_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
PERMUTED_ARCHITECTURES = ("llama",)  # the architectures transformers' GGUF loader un-permutes


def llama_permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf permute(): rows grouped (head, rotary half, dim) -> (head, dim, half)."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_lora_tensors(
    state: Mapping[str, torch.Tensor], *, architecture: str, n_head: int, n_kv_head: int
) -> dict[str, np.ndarray]:
    """PEFT state dict -> {blk.{i}.{attn_q,...}.weight.lora_{a,b}: float32 array}; a (r, in), b (out, r)."""
    tensors: dict[str, np.ndarray] = {}
    for key, value in state.items():
        match = PEFT_KEY.search(key)
        if match is None or match.group(2) not in HF_TO_GGUF:
            raise ValueError(
                f"cannot map LoRA tensor {key!r} to a llama.cpp tensor name "
                f"(supported modules: {', '.join(HF_TO_GGUF)})"
            )
        layer, module, which = match.groups()
        array = value.detach().to(torch.float32).cpu().numpy()
        if which == "B" and architecture in PERMUTED_ARCHITECTURES and module in ("q_proj", "k_proj"):
            array = llama_permute(array, n_head if module == "q_proj" else n_kv_head)
        tensors[f"blk.{layer}.{HF_TO_GGUF[module]}.weight.lora_{which.lower()}"] = np.ascontiguousarray(array)
    return tensors


def write_gguf_lora(path: str | Path, tensors: Mapping[str, np.ndarray], *, architecture: str, alpha: float) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for name in sorted(tensors):
        writer.add_tensor(name, tensors[name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def gguf_architecture(base: str | Path | None, model_type: str) -> str:
    """The architecture llama.cpp knows the base model by: the base GGUF's general.architecture when the base
    is a GGUF (transformers' model_type can differ, e.g. gemma3_text for llama.cpp's gemma3), else model_type."""
    if base is not None and str(base).endswith(".gguf"):
        import gguf

        field = gguf.GGUFReader(str(base)).fields.get("general.architecture")
        if field is not None:
            return bytes(field.parts[field.data[0]]).decode("utf-8")
    return model_type


def export_peft_model(model: torch.nn.Module, path: str | Path, base: str | Path | None = None) -> None:
    """Write the active LoRA adapter of a PeftModel as a GGUF LoRA adapter for the base model `base`."""
    from peft import get_peft_model_state_dict

    config = model.base_model.model.config
    architecture = gguf_architecture(base, config.model_type)
    lora = model.peft_config[model.active_adapter]
    if getattr(lora, "use_rslora", False):
        raise ValueError("rsLoRA scaling (alpha/sqrt(r)) has no GGUF equivalent; train without use_rslora")
    tensors = gguf_lora_tensors(
        get_peft_model_state_dict(model),
        architecture=architecture,
        n_head=config.num_attention_heads,
        n_kv_head=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
    )
    write_gguf_lora(path, tensors, architecture=architecture, alpha=float(lora.lora_alpha))
