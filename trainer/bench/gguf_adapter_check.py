"""Does llama.cpp apply our GGUF LoRA adapter the way transformers applies the PEFT one?

Loads SmolLM2-135M from its GGUF in transformers, gives it a random LoRA on q_proj (and v_proj), and compares
the next-token distribution after a chat prompt: transformers (PEFT) vs node-llama-cpp with (a) no adapter,
(b) the exported adapter (q LoRA-B permuted like llama.cpp permutes the base q weights), (c) the same adapter
written WITHOUT that permutation. (b) must match transformers; (c) must not.

    .venv/bin/python trainer/bench/gguf_adapter_check.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from peft import get_peft_model_state_dict  # noqa: E402

from nanoresearch_trainer.data import render_prompt  # noqa: E402
from nanoresearch_trainer.export_gguf import gguf_lora_tensors, write_gguf_lora  # noqa: E402
from nanoresearch_trainer.model import attach_lora, default_base, load_base  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> int:
    torch.manual_seed(0)
    base_path = default_base()
    model, tok = load_base(base_path, torch.device("cpu"))
    model = attach_lora(model, rank=8, alpha=16, targets=("q_proj", "v_proj"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5 if "q_proj" in name else 0.05)
    prompt = render_prompt(
        tok, "Suggest one experiment to test whether small MLPs beat gradient boosting on tabular data."
    )
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        with model.disable_adapter():
            base_probs = model(input_ids=torch.tensor([ids])).logits[0, -1].softmax(-1)
        lora_probs = model(input_ids=torch.tensor([ids])).logits[0, -1].softmax(-1)
    top = sorted(set(base_probs.topk(10).indices.tolist()) | set(lora_probs.topk(10).indices.tolist()))

    config = model.base_model.model.config
    state = get_peft_model_state_dict(model)
    with tempfile.TemporaryDirectory() as tmp:
        good, wrong = Path(tmp) / "permuted.gguf", Path(tmp) / "unpermuted.gguf"
        write_gguf_lora(
            good,
            gguf_lora_tensors(
                state, architecture="llama", n_head=config.num_attention_heads, n_kv_head=config.num_key_value_heads
            ),
            architecture="llama",
            alpha=16,
        )
        unpermuted = gguf_lora_tensors(state, architecture="none", n_head=0, n_kv_head=0)
        write_gguf_lora(wrong, unpermuted, architecture="llama", alpha=16)
        request = Path(tmp) / "request.json"
        request.write_text(
            json.dumps(
                {
                    "model": str(base_path),
                    "tokens": ids,
                    "ids": top,
                    "adapters": {"none": None, "permuted": str(good), "unpermuted": str(wrong)},
                }
            )
        )
        proc = subprocess.run(
            ["node", str(HERE / "gguf_adapter_check.mjs"), str(request)],
            capture_output=True,
            text=True,
            cwd=HERE,
            timeout=300,
        )
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        cpp = json.loads(proc.stdout.strip().splitlines()[-1])

    def dist(a, b):
        return max(abs(x - y) for x, y in zip(a, b, strict=True))

    hf_base = [float(base_probs[i]) for i in top]
    hf_lora = [float(lora_probs[i]) for i in top]
    report = {
        "tokens_compared": len(top),
        "max|p| hf(base) vs cpp(no adapter)": dist(hf_base, cpp["none"]),
        "max|p| hf(base) vs hf(lora)  [what the adapter changes]": dist(hf_base, hf_lora),
        "max|p| hf(lora) vs cpp(permuted adapter)": dist(hf_lora, cpp["permuted"]),
        "max|p| hf(lora) vs cpp(unpermuted adapter)": dist(hf_lora, cpp["unpermuted"]),
        "top token hf(lora) / cpp(permuted) / cpp(unpermuted)": [
            tok.decode([top[max(range(len(top)), key=lambda i: v[i])]])
            for v in (hf_lora, cpp["permuted"], cpp["unpermuted"])
        ],
    }
    print(json.dumps(report, indent=2))
    ok = (
        report["max|p| hf(lora) vs cpp(permuted adapter)"] < 0.5 * report["max|p| hf(lora) vs cpp(unpermuted adapter)"]
        and report["max|p| hf(base) vs hf(lora)  [what the adapter changes]"] > 0.1
    )
    print("OK: llama.cpp applies the exported adapter like transformers" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
