"""`sdpo --nproc 2` on the CPU (gloo): the same loss curve and adapter as one process, one event stream, one
error event when the workers fail."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_model, make_tokenizer
from nanoresearch_trainer.cli import main

CLI = [sys.executable, "-m", "nanoresearch_trainer.cli"]
# Responses of different lengths, so the two shares of a batch hold different numbers of scored tokens.
ROWS = [
    {"id": "r0", "x": "topic t0", "y": "alpha a1 a2 a3", "feedback": "likes alpha"},
    {"id": "r1", "x": "topic t1", "y": "beta b1", "feedback": "likes beta"},
    {"id": "r2", "x": "topic t2", "y": "alpha a1 filler filler filler a2 a3", "feedback": "likes alpha"},
    {"id": "r3", "x": "topic t3", "y": "beta", "feedback": ""},
    {"id": "r4", "x": "topic t4", "y": "alpha b1 b2 b3 a3", "feedback": "none"},
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    tok = make_tokenizer()
    make_model(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "examples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def run_sdpo(*args: str) -> tuple[int, list[dict], str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*CLI, "sdpo", *args, "--threads", "1"], capture_output=True, text=True, timeout=300, env=env)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def test_two_processes_train_the_same_adapter_as_one(tiny_dir, data, tmp_path, capsys):
    common = [
        "--data",
        str(data),
        "--base",
        str(tiny_dir),
        "--steps",
        "4",
        "--batch",
        "3",
        "--rank",
        "4",
        "--alpha",
        "8",
        "--lr",
        "1e-2",
        "--precision",
        "fp32",
        "--version",
        "v1",
        "--device",
        "cpu",
    ]
    # One process: in this one (already imported: seconds saved), 1 thread like the workers (conftest).
    assert main(["sdpo", *common, "--out", str(tmp_path / "single"), "--threads", "1"]) == 0
    single = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    code, parallel, stderr = run_sdpo(*common, "--out", str(tmp_path / "parallel"), "--nproc", "2")
    assert code == 0, (parallel, stderr[-3000:])

    # One event stream (rank 0's): one start, one line per step, one done.
    assert [e["event"] for e in parallel] == ["start", "step", "step", "step", "step", "saving", "done"]
    assert parallel[0]["world_size"] == 2 and single[0]["world_size"] == 1
    curve = lambda events, key: [e[key] for e in events if e["event"] == "step"]  # noqa: E731
    assert curve(parallel, "loss") == pytest.approx(curve(single, "loss"), abs=1e-4)
    assert curve(parallel, "mean_advantage") == pytest.approx(curve(single, "mean_advantage"), abs=1e-4)
    assert len(set(curve(single, "loss"))) == 4  # the curve moves: the comparison is not of constants

    manifest = parallel[-1]["manifest"]
    assert manifest == json.loads((tmp_path / "parallel" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["devices"] == ["cpu", "cpu"]
    assert single[-1]["manifest"]["world_size"] == 1 and single[-1]["manifest"]["devices"] == ["cpu"]
    assert manifest["final_loss"] == pytest.approx(single[-1]["manifest"]["final_loss"], abs=1e-4)
    weights = [load_file(tmp_path / run / "peft" / "adapter_model.safetensors") for run in ("single", "parallel")]
    assert sorted(weights[0]) == sorted(weights[1])
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, atol=1e-5, rtol=0)
    assert not list(tmp_path.glob("parallel.tmp-*"))


def test_failing_workers_give_one_error_event_naming_them(tiny_dir, data, tmp_path):
    code, events, _ = run_sdpo(
        "--data",
        str(data),
        "--base",
        str(tiny_dir),
        "--out",
        str(tmp_path / "o"),
        "--batch",
        "2",
        "--nproc",
        "2",
        "--device",
        "cpu",
        "--targets",
        "no_such_proj",
    )
    assert code == 1
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1 and events[-1] is errors[0], events
    message = errors[0]["message"]
    # Each worker fails; the agent stops the others once it sees the first, so one or both are named.
    assert message.startswith("training failed in process ") and "of 2: NoMatchingPeftModuleError" in message
    assert "no_such_proj" in message, message
    assert not (tmp_path / "o").exists()


def test_launch_input_errors_are_reported_once_before_any_worker_starts(tiny_dir, data, tmp_path, capsys):
    args = ["sdpo", "--data", str(data), "--base", str(tiny_dir), "--out", str(tmp_path / "o"), "--nproc", "2"]
    assert main(args) == 2  # default --batch 1: nothing for the second process to do
    assert "--batch 1 is smaller than the 2 processes" in json.loads(capsys.readouterr().out)["message"]
    assert main([*args, "--batch", "2", "--device", "cuda:1"]) == 2
    assert "names one device" in json.loads(capsys.readouterr().out)["message"]
    no_feedback = tmp_path / "none.jsonl"
    no_feedback.write_text(json.dumps(ROWS[3]) + "\n")
    assert (
        main(
            [
                "sdpo",
                "--data",
                str(no_feedback),
                "--out",
                str(tmp_path / "o"),
                "--base",
                str(tiny_dir),
                "--nproc",
                "2",
                "--batch",
                "2",
            ]
        )
        == 2
    )
    assert "none of the 1 rows has feedback" in json.loads(capsys.readouterr().out)["message"]


def test_sigterm_stops_every_worker_and_keeps_the_previous_adapter(tiny_dir, data, tmp_path):
    """What kernel-lib's trainer client does to cancel a run: SIGTERM to the process it started."""
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "manifest.json").write_text('{"version": "v0"}')
    args = [
        "--data",
        str(data),
        "--base",
        str(tiny_dir),
        "--out",
        str(out),
        "--batch",
        "2",
        "--nproc",
        "2",
        "--device",
        "cpu",
        "--steps",
        "100000",
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(
        [*CLI, "sdpo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        for line in proc.stdout:
            if json.loads(line)["event"] == "step":
                break
        workers = [int(pid) for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert len(workers) == 2
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
    assert json.loads(rest.splitlines()[-1]) == {
        "event": "error",
        "message": "interrupted; the previous adapter was left unchanged",
    }
    gone = lambda pid: not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # noqa: E731
    assert all(gone(pid) for pid in workers)
    assert (out / "manifest.json").read_text() == '{"version": "v0"}'
