"""Data-parallel SDPO over several processes: `sdpo --nproc N` launches N workers with PyTorch's elastic launcher
(what `torchrun --standalone --nproc-per-node N` runs), gloo between CPU processes, NCCL between GPUs.

Every worker holds the whole model (frozen base + LoRA), draws the same global batch of each step (the same seeded
order), and takes its share of the rows: rows rank, rank + N, ... Each share's gradient is weighted by its part of
the *global* batch's scored tokens, so the gradients' SUM over the workers is exactly the single-process gradient
of the batch's token mean (DistributedDataParallel's average of per-rank means would weigh a share with short
responses like one with long ones). One all-reduce of the flattened LoRA gradients per step; every worker then
clips and steps the same AdamW on the same numbers, so the LoRA weights stay identical without broadcasting them.

Why not DistributedDataParallel's module wrapper: it all-reduces from hooks inside the backward pass and expects
one synchronised backward per rank per step, but a step here runs a variable number of micro-batch backwards per
rank (rows one per forward on a CPU, uneven shares) and a teacher forward through the same module. Why not FSDP:
it shards parameters to save memory, but the trainable parameters are only the LoRA (a few MB even at 7B) and the
frozen base must be whole on every device for the forwards anyway; sharding it would add an all-gather per layer
per forward for no saving that matters at these sizes.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

# Set by `launch` in the workers' environment: the launcher reports their failures, so they do not emit errors.
LAUNCHED_ENV = "NANORESEARCH_TRAINER_LAUNCHED"


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def world_from_env(env: Mapping[str, str] = os.environ) -> World:
    """This process's place among the workers, from the variables the elastic launcher (or torchrun) sets."""
    if int(env.get("WORLD_SIZE", "1")) <= 1:
        return SINGLE
    return World(rank=int(env["RANK"]), local_rank=int(env["LOCAL_RANK"]), size=int(env["WORLD_SIZE"]))


def launched_by_cli(env: Mapping[str, str] = os.environ) -> bool:
    return env.get(LAUNCHED_ENV) == "1"


class DeviceError(ValueError):
    """A --device / --nproc combination that cannot run (e.g. more processes than GPUs)."""


def worker_device(name: str, world: World) -> torch.device:
    """The device of this worker: `cuda:LOCAL_RANK` for auto/cuda when GPUs are visible, else the CPU."""
    if name not in ("auto", "cpu", "cuda"):
        raise DeviceError(
            f"--device {name} names one device; with several processes pass --device cuda (each "
            "process takes cuda:LOCAL_RANK), cpu or auto"
        )
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    visible = torch.cuda.device_count()
    if world.local_rank >= visible:
        raise DeviceError(
            f"process {world.local_rank} of this machine needs a GPU, and {visible} CUDA device(s) "
            "are visible: lower --nproc or pass --device cpu"
        )
    return torch.device("cuda", world.local_rank)


def check_launch(nproc: int, device: str) -> None:
    """Before launching: a --device / --nproc pair that every worker would reject, reported once."""
    worker_device(device, World(rank=nproc - 1, local_rank=nproc - 1, size=nproc))


def join(world: World, device: torch.device) -> None:
    """Join the process group of the launch: NCCL between GPUs, gloo between CPU processes."""
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    if dist.get_world_size() != world.size:
        raise RuntimeError(f"the process group has {dist.get_world_size()} processes, WORLD_SIZE says {world.size}")


def leave(world: World, *, orderly: bool) -> None:
    """Leave the process group. `orderly` (every worker finished its collectives): one worker after the other,
    the highest rank first, rank 0 last. A worker of a successful round once ended on SIGABRT in CI, the way gloo
    aborts a worker whose peer closes their connection while it is closing it too; leaving in turn rules that
    out. So a barrier first (no collective in flight), then each worker waits, in the launch's store (the
    MASTER_ADDR/MASTER_PORT that join()'s env:// initialisation required), for the rank above it to have left.
    After a failure the other workers may be stuck in a collective: then it only tears down its own part."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    if not orderly:
        dist.destroy_process_group()
        return
    from datetime import timedelta

    dist.barrier()
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timedelta(seconds=60)
    )
    key = f"nanoresearch-left-{os.environ.get('TORCHELASTIC_RUN_ID', '')}-{{rank}}"
    if world.rank + 1 < world.size:
        store.wait([key.format(rank=world.rank + 1)])
    dist.destroy_process_group()
    store.set(key.format(rank=world.rank), "1")


def describe(device: torch.device) -> str:
    """`cpu`, or `cuda:0 (NVIDIA H200)`: what the manifest records for each worker."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def all_devices(device: torch.device, world: World) -> list[str]:
    """describe() of every worker's device, in rank order."""
    if world.size == 1:
        return [describe(device)]
    import torch.distributed as dist

    gathered: list[str | None] = [None] * world.size
    dist.all_gather_object(gathered, describe(device))
    return [str(name) for name in gathered]


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflatten_into(flat: torch.Tensor, targets: Sequence[torch.Tensor]) -> None:
    offset = 0
    for target in targets:
        target.copy_(flat[offset : offset + target.numel()].view_as(target))
        offset += target.numel()


@torch.no_grad()
def broadcast_parameters(params: Sequence[torch.nn.Parameter]) -> None:
    """Rank 0's values on every worker (a fresh LoRA's A is drawn at random), before the first step."""
    import torch.distributed as dist

    flat = _flat(params)
    dist.broadcast(flat, src=0)
    _unflatten_into(flat, params)


@torch.no_grad()
def sum_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Replace every worker's LoRA gradients by their sum over the workers: one all-reduce of one flat buffer.
    A worker whose share scored no token has no .grad yet; it contributes zeros."""
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = _flat([p.grad for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    _unflatten_into(flat, [p.grad for p in params])


def sum_over_workers(values: Sequence[float], device: torch.device) -> list[float]:
    """Each value summed over the workers (float64, so token counts stay exact)."""
    import torch.distributed as dist

    buffer = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.tolist()


def record_failure(err: BaseException) -> None:
    """Write the exception into the error file the elastic agent reads (TORCHELASTIC_ERROR_FILE), so the launcher
    can say what failed in which worker."""
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    ErrorHandler().record_exception(err)


class WorkersFailed(RuntimeError):
    """One or more workers exited with an error; the message names each and what it raised."""


class LaunchInterrupted(Exception):
    """The launcher was signalled (SIGINT/SIGTERM); the workers have been stopped."""


def _threads_per_worker(nproc: int) -> str:
    return str(max(1, (os.cpu_count() or 1) // nproc))


def _failure_text(failure) -> str:
    """What a worker raised (from its error file), else how it ended (a signal, an exit code)."""
    message = failure.message
    if isinstance(message, dict):  # the error file ErrorHandler.record_exception wrote
        message = message.get("message", "")
    if not message or message.startswith("To enable traceback"):  # exited without an error file
        message = f"exit code {failure.exitcode}"
    return message


def launch(nproc: int, cli_args: Sequence[str]) -> None:
    """Run `python -m nanoresearch_trainer.cli *cli_args` in `nproc` workers on this machine (a standalone c10d
    rendezvous on a free local port, no restarts) and wait for them. Their stdout is this process's stdout: rank 0
    writes the progress and done events there. Raises WorkersFailed or LaunchInterrupted."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ[LAUNCHED_ENV] = "1"
    # Each worker's intra-op threads: the cores split between the workers (torchrun's default is 1).
    os.environ.setdefault("OMP_NUM_THREADS", _threads_per_worker(nproc))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.1,
    )
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "nanoresearch_trainer.cli", *cli_args)
    except ChildFailedError as err:
        failures = sorted(err.failures.items(), key=lambda item: (item[1].timestamp, item[0]))
        described = [f"process {rank} of {nproc}: {_failure_text(failure)}" for rank, failure in failures]
        raise WorkersFailed("training failed in " + "; ".join(described) + " (tracebacks on stderr)") from None
    except SignalException as err:
        raise LaunchInterrupted(str(err)) from None
