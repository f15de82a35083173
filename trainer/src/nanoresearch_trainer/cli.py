"""`nanoresearch-trainer sdpo ...`: JSON lines on stdout (progress, then done or error), logs on stderr."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from .config import TEACHER_KINDS, TrainConfig  # noqa: E402
from .distributed import World  # noqa: E402
from .loss import LOSS_TYPES  # noqa: E402
from .precision import PRECISIONS  # noqa: E402

Emit = Callable[[dict[str, Any]], None]
DEFAULTS = TrainConfig()  # every training flag's default is TrainConfig's


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
    p.add_argument("--steps", type=int, default=DEFAULTS.steps)
    p.add_argument("--lr", type=float, default=DEFAULTS.lr)
    p.add_argument("--rank", type=int, default=DEFAULTS.rank)
    p.add_argument("--alpha", type=float, default=DEFAULTS.alpha)
    p.add_argument("--max-len", type=int, default=DEFAULTS.max_len)
    p.add_argument("--max-response", type=int, default=DEFAULTS.max_response)
    p.add_argument("--clip", type=float, default=DEFAULTS.clip, help="token advantage clip [-clip, clip]")
    p.add_argument(
        "--batch",
        type=int,
        default=DEFAULTS.batch_size,
        help="rows per optimiser step (the whole batch: with --nproc N each process takes its share)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (with --nproc: auto | cpu | cuda)")
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="data-parallel processes on this machine (torch elastic launch; gloo on CPU, NCCL between "
        "GPUs, process i on cuda:i); the same steps as one process",
    )
    p.add_argument("--loss", choices=LOSS_TYPES, default=DEFAULTS.loss_type)
    p.add_argument("--teacher", choices=TEACHER_KINDS, default=DEFAULTS.teacher)
    p.add_argument("--ema-rate", type=float, default=DEFAULTS.ema_rate)
    p.add_argument("--topk", type=int, default=DEFAULTS.topk, help="support size of the logit-level losses")
    p.add_argument("--targets", default=",".join(DEFAULTS.targets), help="comma-separated LoRA target modules")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULTS.precision,
        help="compute dtype of the step: bf16 autocast (fp32 LoRA weights and loss) where the device "
        "supports it; auto = bf16 on CUDA and on CPUs with AVX512-BF16/AMX, else fp32",
    )
    p.add_argument(
        "--micro-batch",
        type=int,
        default=DEFAULTS.micro_batch,
        help="rows per forward pass (0: 1 on a CPU, where unpadded rows measured fastest; all on a GPU)",
    )
    s = sub.add_parser("score", help="log p(y | x) of every row as the trainer computes it (JSON line per row)")
    s.add_argument("--data", required=True, help="JSONL of sdpo-example rows")
    s.add_argument("--base", help="a .gguf file or a Hugging Face model folder (default: the embedded SmolLM2)")
    s.add_argument("--adapter-in", help="an adapter (trainer output folder or PEFT folder) to score with")
    s.add_argument(
        "--with-base", action="store_true", help="with --adapter-in: also base_logprobs, the adapter switched off"
    )
    s.add_argument("--device", default="cpu")
    s.add_argument("--threads", type=int, default=0)
    return parser


def train_config(args: argparse.Namespace, rank: int, alpha: float, targets: Sequence[str]) -> TrainConfig:
    """The round's settings from the flags (rank, alpha and targets as the attached LoRA has them: a continued
    adapter keeps its own)."""
    return TrainConfig(
        steps=args.steps,
        lr=args.lr,
        rank=rank,
        alpha=alpha,
        max_len=args.max_len,
        max_response=args.max_response,
        clip=args.clip,
        loss_type=args.loss,
        teacher=args.teacher,
        ema_rate=args.ema_rate,
        topk=args.topk,
        seed=args.seed,
        batch_size=args.batch,
        targets=sorted(targets),
        precision=args.precision,
        micro_batch=args.micro_batch,
    )


def check_sdpo_input(args: argparse.Namespace, world_size: int) -> tuple[list[dict[str, Any]], str, Path]:
    """Everything that can be checked before a model is loaded (or workers are launched): the numbers, the
    rows, the base model and the previous adapter. Returns (rows, data sha256, base model path)."""
    from .adapter_io import peft_dir_of
    from .data import read_examples, rows_with_feedback
    from .model import default_base

    for name in ("steps", "rank", "max_len", "max_response", "batch", "topk", "nproc"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.nproc not in (1, world_size):
        raise UsageError(
            f"--nproc {args.nproc} inside a launch of {world_size} processes: pass --nproc {world_size} or leave it out"
        )
    if args.batch < world_size:
        raise UsageError(
            f"--batch {args.batch} is smaller than the {world_size} processes: each takes its share "
            f"of a step's rows, so pass --batch {world_size} or more"
        )
    rows, data_sha = read_examples(args.data)
    base = Path(args.base) if args.base else default_base()
    if not base.exists():
        raise FileNotFoundError(
            f"base model {base} does not exist; pass --base PATH to a .gguf file or a Hugging Face model folder"
        )
    if args.adapter_in:
        peft_dir_of(args.adapter_in)
    rows_with_feedback(rows)
    return rows, data_sha, base


def launch_sdpo(args: argparse.Namespace, cli_args: Sequence[str]) -> None:
    """`sdpo --nproc N`: check the input once here, then run N workers of this same command line."""
    from . import distributed

    check_sdpo_input(args, args.nproc)
    try:
        distributed.check_launch(args.nproc, args.device)
    except distributed.DeviceError as err:
        raise UsageError(str(err)) from None
    distributed.launch(args.nproc, cli_args)


def run_sdpo(args: argparse.Namespace, emit: Emit, world: World) -> dict[str, Any]:
    """One SDPO round in this process: the whole round, or one worker's part of a data-parallel one (then only
    rank 0 emits events and writes the adapter). Returns the manifest (rank 0) or {} (the other workers)."""
    from . import distributed
    from .adapter_io import read_manifest, remove_stale_temporaries, save_adapter, sha256_of, utc_now
    from .model import attach_lora, load_base, pick_device
    from .precision import compute_dtype
    from .train import train

    rows, data_sha, base = check_sdpo_input(args, world.size)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = pick_device(args.device) if world.size == 1 else distributed.worker_device(args.device, world)
    except distributed.DeviceError as err:
        raise UsageError(str(err)) from None
    out = Path(args.out)
    if world.is_main:
        remove_stale_temporaries(out.resolve())
    dtype = str(compute_dtype(device, args.precision)).replace("torch.", "")
    emit(
        {
            "event": "start",
            "examples": len(rows),
            "base": str(base),
            "device": str(device),
            "steps": args.steps,
            "precision": dtype,
            "world_size": world.size,
        }
    )
    if world.size > 1:
        distributed.join(world, device)
    finished = False
    try:
        model, tokenizer = load_base(base, device)
        targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        torch.manual_seed(args.seed)  # a fresh LoRA's A is drawn at random: --seed makes the round reproducible
        model = attach_lora(model, rank=args.rank, alpha=args.alpha, targets=targets, adapter_in=args.adapter_in)
        lora = model.peft_config[model.active_adapter]
        cfg = train_config(args, int(lora.r), float(lora.lora_alpha), lora.target_modules)
        result = train(model, tokenizer, rows, cfg, emit, world)
        devices = distributed.all_devices(device, world)
        finished = True
    finally:
        distributed.leave(world, orderly=finished)
    if not world.is_main:
        return {}

    parent = args.parent_version
    if parent is None and args.adapter_in:
        parent = (read_manifest(args.adapter_in) or {}).get("version")
    created = utc_now()
    version = args.version or f"sdpo-{created[:19].replace(':', '').replace('-', '')}-{data_sha[:8]}"
    manifest = {
        "version": version,
        "base_model": str(base.resolve()),
        "base_model_sha256": sha256_of(base) if base.is_file() else None,
        "data_sha256": data_sha,
        "examples": result.examples,
        "examples_used": result.examples_used,
        "steps": result.steps,
        "lr": cfg.lr,
        "rank": cfg.rank,
        "alpha": cfg.alpha,
        "loss_type": cfg.loss_type,
        "teacher": cfg.teacher,
        "final_loss": result.final_loss,
        "mean_advantage": result.mean_advantage,
        "tokens_per_s": result.tokens_per_s,
        "wall_s": result.wall_s,
        "device": str(device),
        "world_size": world.size,
        "devices": devices,
        "parent_version": parent,
        "created_at": created,
    }
    emit({"event": "saving", "out": str(out)})
    return read_manifest(save_adapter(model, out, manifest, base))


def run_score(args: argparse.Namespace, emit: Emit) -> dict[str, Any]:
    import torch

    from .adapter_io import load_adapter
    from .data import read_examples
    from .model import default_base, load_base, pick_device
    from .score import score_rows

    if args.with_base and not args.adapter_in:
        raise UsageError("--with-base compares an adapter with its base: give the adapter with --adapter-in")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, _ = read_examples(args.data)
    model, tokenizer = load_base(Path(args.base) if args.base else default_base(), pick_device(args.device))
    if args.adapter_in:
        model = load_adapter(model, args.adapter_in, trainable=False)
    model.eval()
    if next(model.parameters()).dtype != torch.float32:
        # Scores are compared with fp32 inference. (transformers refuses .float() on a model loaded from a
        # GGUF file, which a CPU load already gives in fp32.)
        model = model.to(torch.float32)
    for scored in score_rows(model, tokenizer, rows, with_base=args.with_base):
        emit({"event": "row", **scored})
    return {"rows": len(rows)}


def main(argv: list[str] | None = None) -> int:
    from .distributed import LaunchInterrupted, WorkersFailed, launched_by_cli, record_failure, world_from_env

    events: TextIO = sys.stdout
    world = world_from_env()
    # In a data-parallel round only rank 0 speaks; a launch by this CLI reports its workers' failures itself.
    speaks = world.is_main and not (world.size > 1 and launched_by_cli())

    def emit(event: dict[str, Any]) -> None:
        if world.is_main:
            events.write(json.dumps(event) + "\n")
            events.flush()

    def fail(event: dict[str, Any], err: BaseException) -> None:
        if world.size > 1:
            record_failure(err)
        if speaks:
            emit(event)

    started = time.perf_counter()
    cli_args = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(cli_args)
        # Libraries print to stdout now and then; stdout is reserved for the JSON event stream.
        with contextlib.redirect_stdout(sys.stderr):
            if args.command == "sdpo" and args.nproc > 1 and world.size == 1:
                launch_sdpo(args, cli_args)  # the workers' rank 0 emits the events, "done" included
                return 0
            import transformers

            transformers.utils.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()
            if args.command == "score":
                emit({"event": "done", **run_score(args, emit), "wall_s": time.perf_counter() - started})
                return 0
            manifest = run_sdpo(args, emit, world)
        emit(
            {
                "event": "done",
                "manifest": manifest,
                "out": str(Path(args.out).resolve()),
                "wall_s": time.perf_counter() - started,
            }
        )
        return 0
    except (KeyboardInterrupt, LaunchInterrupted) as err:
        fail({"event": "error", "message": "interrupted; the previous adapter was left unchanged"}, err)
        return 130
    except Exception as err:  # every failure becomes one error event + non-zero exit code
        from .data import DataError

        usage = isinstance(err, (UsageError, DataError, FileNotFoundError))
        plain = usage or isinstance(err, WorkersFailed)
        fail({"event": "error", "message": str(err) if plain else f"{type(err).__name__}: {err}"}, err)
        if not plain:
            import traceback

            traceback.print_exc(file=sys.stderr)
        return 2 if usage else 1


if __name__ == "__main__":
    sys.exit(main())
