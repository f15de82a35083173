"""`nanoresearch-trainer sdpo ...`: JSON lines on stdout (progress, then done or error), logs on stderr."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, TextIO

os.environ.setdefault("HF_HUB_OFFLINE", "1")           # never reach the model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from .loss import LOSS_TYPES  # noqa: E402


class UsageError(Exception):
    pass


class JsonArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see nanoresearch-trainer sdpo --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = JsonArgumentParser(prog="nanoresearch-trainer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=JsonArgumentParser)
    p = sub.add_parser("sdpo", help="one SDPO round over a user's feedback history -> a LoRA adapter")
    p.add_argument("--data", required=True, help="JSONL of sdpo-example rows (the user's whole history)")
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--base", help="a .gguf file or a Hugging Face model folder (default: the embedded SmolLM2)")
    p.add_argument("--adapter-in", help="previous round's output folder (or PEFT folder) to continue from")
    p.add_argument("--version", help="adapter version recorded in the manifest (default: derived from time + data)")
    p.add_argument("--parent-version", help="version of --adapter-in (default: read from its manifest)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--max-len", type=int, default=2048)
    p.add_argument("--max-response", type=int, default=512)
    p.add_argument("--clip", type=float, default=5.0, help="token advantage clip [-clip, clip]")
    p.add_argument("--batch", type=int, default=1, help="rows per optimiser step")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--loss", choices=LOSS_TYPES, default="token")
    p.add_argument("--teacher", choices=("live", "ema"), default="live")
    p.add_argument("--ema-rate", type=float, default=0.05)
    p.add_argument("--topk", type=int, default=20, help="support size of the logit-level losses")
    p.add_argument("--targets", default="q_proj,v_proj", help="comma-separated LoRA target modules")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="compute dtype of the step: bf16 autocast (fp32 LoRA weights and loss) where the device "
                        "supports it; auto = bf16 on CUDA and on CPUs with AVX512-BF16/AMX, else fp32")
    p.add_argument("--micro-batch", type=int, default=0,
                   help="rows per forward pass (0: 1 on a CPU, where unpadded rows measured fastest; all on a GPU)")
    s = sub.add_parser("score", help="log p(y | x) of every row as the trainer computes it (JSON line per row)")
    s.add_argument("--data", required=True, help="JSONL of sdpo-example rows")
    s.add_argument("--base", help="a .gguf file or a Hugging Face model folder (default: the embedded SmolLM2)")
    s.add_argument("--adapter-in", help="an adapter (trainer output folder or PEFT folder) to score with")
    s.add_argument("--device", default="cpu")
    s.add_argument("--threads", type=int, default=0)
    return parser


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_sdpo(args: argparse.Namespace, emit) -> dict[str, Any]:
    from .data import read_examples
    from .model import attach_lora, default_base, load_base, pick_device
    from .train import TrainConfig, remove_stale_temporaries, save_adapter, train, utc_now

    for name in ("steps", "rank", "max_len", "max_response", "batch", "topk"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows, data_sha = read_examples(args.data)
    base = Path(args.base) if args.base else default_base()
    device = pick_device(args.device)
    out = Path(args.out)
    remove_stale_temporaries(out.resolve())
    from .precision import compute_dtype

    dtype = str(compute_dtype(device, args.precision)).replace("torch.", "")
    emit({"event": "start", "examples": len(rows), "base": str(base), "device": str(device), "steps": args.steps,
          "precision": dtype})
    model, tokenizer = load_base(base, device)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    model = attach_lora(model, rank=args.rank, alpha=args.alpha, targets=targets, adapter_in=args.adapter_in)
    lora = model.peft_config[model.active_adapter]
    cfg = TrainConfig(steps=args.steps, lr=args.lr, rank=int(lora.r), alpha=float(lora.lora_alpha),
                      max_len=args.max_len, max_response=args.max_response, clip=args.clip, loss_type=args.loss,
                      teacher=args.teacher, ema_rate=args.ema_rate, topk=args.topk, seed=args.seed,
                      batch_size=args.batch, targets=sorted(lora.target_modules), precision=args.precision,
                      micro_batch=args.micro_batch)
    result = train(model, tokenizer, rows, cfg, emit)

    parent = args.parent_version
    if parent is None and args.adapter_in and (Path(args.adapter_in) / "manifest.json").is_file():
        parent = json.loads((Path(args.adapter_in) / "manifest.json").read_text())["version"]
    created = utc_now()
    version = args.version or f"sdpo-{created[:19].replace(':', '').replace('-', '')}-{data_sha[:8]}"
    manifest = {
        "version": version, "base_model": str(base.resolve()),
        "base_model_sha256": sha256_of(base) if base.is_file() else None,
        "data_sha256": data_sha, "examples": result.examples, "examples_used": result.examples_used,
        "steps": result.steps, "lr": cfg.lr, "rank": cfg.rank, "alpha": cfg.alpha, "loss_type": cfg.loss_type,
        "teacher": cfg.teacher, "final_loss": result.final_loss, "mean_advantage": result.mean_advantage,
        "tokens_per_s": result.tokens_per_s, "wall_s": result.wall_s, "device": str(device),
        "parent_version": parent, "created_at": created,
    }
    emit({"event": "saving", "out": str(out)})
    path = save_adapter(model, out, manifest, base)
    return json.loads((path / "manifest.json").read_text())


def run_score(args: argparse.Namespace, emit) -> dict[str, Any]:
    from .data import read_examples
    from .model import default_base, load_base, peft_dir_of, pick_device
    from .score import score_rows
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows, _ = read_examples(args.data)
    model, tokenizer = load_base(Path(args.base) if args.base else default_base(), pick_device(args.device))
    if args.adapter_in:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(peft_dir_of(args.adapter_in)))
    model.eval()
    for scored in score_rows(model.float(), tokenizer, rows):
        emit({"event": "row", **scored})
    return {"rows": len(rows)}


def main(argv: list[str] | None = None) -> int:
    events: TextIO = sys.stdout

    def emit(event: dict[str, Any]) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    started = time.perf_counter()
    try:
        args = build_parser().parse_args(argv)
        # Libraries print to stdout now and then; stdout is reserved for the JSON event stream.
        with contextlib.redirect_stdout(sys.stderr):
            import transformers

            transformers.utils.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()
            if args.command == "score":
                emit({"event": "done", **run_score(args, emit), "wall_s": time.perf_counter() - started})
                return 0
            manifest = run_sdpo(args, emit)
        emit({"event": "done", "manifest": manifest, "out": str(Path(args.out).resolve()),
              "wall_s": time.perf_counter() - started})
        return 0
    except KeyboardInterrupt:
        emit({"event": "error", "message": "interrupted; the previous adapter was left unchanged"})
        return 130
    except Exception as err:  # every failure becomes one error event + non-zero exit code
        from .data import DataError

        usage = isinstance(err, (UsageError, DataError, FileNotFoundError))
        emit({"event": "error", "message": str(err) if usage else f"{type(err).__name__}: {err}"})
        if not usage:
            import traceback

            traceback.print_exc(file=sys.stderr)
        return 2 if usage else 1


if __name__ == "__main__":
    sys.exit(main())
