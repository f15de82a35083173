"""The feedback loop end to end on CPU: planner outputs -> simulated user feedback -> one SDPO round (the real
CLI, 50 steps on SmolLM2) -> reload -> does the planner, WITHOUT feedback in context, lean toward it?

Planner prompts list candidate skills for a research topic and ask for JSON. The base model answers each
(greedy, on-policy y). A simulated user gives the same feedback on every answer: always select the
'linear-baseline' skill first. After training, on HELD-OUT topics, we compare the teacher-forced preference
    margin = log p('{"selected_skill_ids": ["linear-baseline"' | x) - log p('{"selected_skill_ids": ["<other>"' | x)
under the adapter vs the base model (mean over held-out prompts and the other candidates).

    .venv/bin/python trainer/bench/loop.py [--steps 50 --lr 1e-4 --threads 2 --out /tmp/loop]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402

from nanoresearch_trainer.data import render_prompt  # noqa: E402
from nanoresearch_trainer.model import default_base, load_base  # noqa: E402

SKILLS = {
    "linear-baseline": "compare against a linear or logistic-regression baseline",
    "ablation-grid": "ablate one component at a time",
    "lr-sweep": "sweep the learning rate on a log grid",
    "seed-variance": "report mean and std over 5 seeds",
    "error-analysis": "inspect the worst 20 predictions by hand",
}
TRAIN_TOPICS = ["small MLPs on tabular data", "graph neural networks for molecule property prediction",
                "vision transformers for satellite images", "data augmentation for speech commands",
                "contrastive pretraining for time series", "pruning convolutional networks",
                "label noise in text classification", "tree ensembles versus neural nets on Kaggle data"]
HELD_OUT = ["reinforcement learning for robot grasping", "transformers for weather forecasting",
            "active learning for medical images", "knowledge distillation for small language models"]
FEEDBACK = ("Always select the linear-baseline skill first: I never trust a result without a linear baseline. "
            "Put \"linear-baseline\" at the start of selected_skill_ids.")
PREFIX = '{"selected_skill_ids": ["'


def planner_x(topic: str, order: int) -> str:
    ids = list(SKILLS)
    ids = ids[order % len(ids):] + ids[:order % len(ids)]  # vary the listing order across prompts
    lines = "\n".join(f"- {i}: {SKILLS[i]}" for i in ids)
    return (f"Research topic: {topic}\nStage: planning\n## Candidate skills\n{lines}\n"
            "Answer with JSON only: {\"selected_skill_ids\": [...], \"prompt_plan\": \"...\"}. "
            "Select the two most useful skills.")


def logprob(model, tok, x: str, continuation: str) -> float:
    prompt = tok(render_prompt(tok, x), add_special_tokens=False)["input_ids"]
    cont = tok(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + cont])
    with torch.no_grad():
        lp = model(input_ids=ids).logits[0, len(prompt) - 1:-1].log_softmax(-1)
    return float(lp.gather(-1, torch.tensor(cont)[:, None]).sum())


def preference_margin(model, tok) -> float:
    margins = []
    for k, topic in enumerate(HELD_OUT):
        x = planner_x(topic, k + 1)
        good = logprob(model, tok, x, PREFIX + "linear-baseline\"")
        for other in list(SKILLS)[1:]:
            margins.append(good - logprob(model, tok, x, PREFIX + other + "\""))
    return sum(margins) / len(margins)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="/tmp/nanoresearch-loop")
    parser.add_argument("--trainer-args", default="", help="extra flags for nanoresearch-trainer sdpo")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    base_path = default_base()
    model, tok = load_base(base_path, torch.device("cpu"))
    model.eval()
    t0 = time.perf_counter()
    rows = []
    for k, topic in enumerate(TRAIN_TOPICS):
        x = planner_x(topic, k)
        ids = torch.tensor([tok(render_prompt(tok, x), add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=48,
                                 do_sample=False)
        y = tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).strip()
        rows.append({"id": f"loop-{k}", "x": x, "y": y or "{}", "feedback": FEEDBACK, "stage": "planning"})
    generate_s = time.perf_counter() - t0
    data = out / "examples.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base_margin = preference_margin(model, tok)
    print(json.dumps({"base_answers": [r["y"][:80] for r in rows[:3]], "generate_s": round(generate_s, 1),
                      "base_margin": base_margin}), flush=True)

    cycle_start = time.perf_counter()
    cmd = [str(Path(sys.executable).parent / "nanoresearch-trainer"), "sdpo", "--data", str(data), "--out",
           str(out / "adapter"), "--steps", str(args.steps), "--lr", str(args.lr), "--threads", str(args.threads),
           *args.trainer_args.split()]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        print(proc.stderr[-2000:], events[-1] if events else "", file=sys.stderr)
        return 1
    train_s = time.perf_counter() - cycle_start
    from peft import PeftModel

    reload_start = time.perf_counter()
    tuned = PeftModel.from_pretrained(model, str(out / "adapter" / "peft"))
    tuned.eval()
    reload_s = time.perf_counter() - reload_start
    tuned_margin = preference_margin(tuned, tok)
    steps = [e for e in events if e["event"] == "step"]
    report = {
        "steps": args.steps, "lr": args.lr, "examples": len(rows),
        "train_cli_wall_s": round(train_s, 1), "reload_s": round(reload_s, 2),
        "cycle_s": round(train_s + reload_s, 1),
        "trainer_tokens_per_s": round(events[-1]["manifest"]["tokens_per_s"], 1),
        "mean_advantage_first5": sum(e["mean_advantage"] for e in steps[:5]) / 5,
        "mean_advantage_last5": sum(e["mean_advantage"] for e in steps[-5:]) / 5,
        "held_out_margin_base": round(base_margin, 3), "held_out_margin_adapter": round(tuned_margin, 3),
        "shift_nats": round(tuned_margin - base_margin, 3),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
