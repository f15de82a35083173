"""Plot of `npm run bench:personalization`: held-out score by round, one line per simulated user and the
control (dashed). Usage: plot-personalization.py report.json out.png (run with .venv-experiment's Python)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(report_path: str, png_path: str) -> None:
    with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for user in report["users"]:
        rounds = [r["round"] for r in user["rounds"]]
        scores = [r["score"] for r in user["rounds"]]
        style = dict(linestyle="--", color="black", linewidth=2) if user["control"] else dict(marker="o")
        ax.plot(rounds, scores, label=user["user"], **style)
    ax.set_xlabel("round (SDPO rounds of feedback)")
    ax.set_ylabel("held-out score (0-100)")
    ax.set_ylim(-5, 105)
    ax.set_xticks(range(len(report["users"][0]["rounds"])))
    ax.set_title(f"Planner {report['planner']}: memory off, no feedback in context", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(png_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
