"""The trainer's side of kernel-lib's rendering test (test/planner-rendering.test.ts), one process:

    render_and_score.py REQUEST.json

REQUEST: {"rows": [sdpo-example rows], "system": the system message, "user": the user message,
          "bases": [GGUF paths to score with]}. Prints one JSON object: the ids of the call rendered from its
messages by the trainer (transformers' chat template), the generation suffix's ids, and for each base the
score rows (nanoresearch_trainer.score: prompt ids as read back from x, teacher ids, response ids, log-probs).
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402

from nanoresearch_trainer.data import encode_text, generation_suffix, render_prompt  # noqa: E402
from nanoresearch_trainer.model import load_base  # noqa: E402
from nanoresearch_trainer.score import score_rows  # noqa: E402


def main(path: str) -> None:
    request = json.loads(open(path, encoding="utf-8").read())
    torch.set_num_threads(int(os.environ.get("NANORESEARCH_TRAINER_THREADS", "1")))
    out: dict = {"scores": {}}
    for i, base in enumerate(request["bases"]):
        model, tokenizer = load_base(base, torch.device("cpu"))
        if i == 0:
            out["template_ids"] = encode_text(tokenizer, render_prompt(tokenizer, request["user"], request["system"]))
            out["suffix_ids"] = encode_text(tokenizer, generation_suffix(tokenizer))
        model.eval()
        out["scores"][base] = list(score_rows(model, tokenizer, request["rows"]))
        del model
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
