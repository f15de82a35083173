"""The CLI end to end on the tiny model: outputs, manifest, GGUF adapter, atomicity, input errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import gguf
import jsonschema
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import make_model, make_tokenizer
from nanoresearch_trainer.cli import main
from nanoresearch_trainer.data import find_schema_dir

CLI = [sys.executable, "-m", "nanoresearch_trainer.cli"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    tok = make_tokenizer()
    make_model(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_rows(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [
    {"id": f"r{i}", "x": f"topic t{i}", "y": "alpha a1 a2 a3", "feedback": fb, "stage": "planning"}
    for i, fb in enumerate(["likes alpha", "likes beta", "", "none"])
]


def run_cli(*args: str, timeout: int = 300) -> tuple[int, list[dict]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*CLI, "sdpo", *args, "--threads", "1"], capture_output=True, text=True, timeout=timeout, env=env
    )
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def test_cli_writes_peft_gguf_and_a_valid_manifest_and_continues_from_it(tiny_dir, tmp_path):
    data = write_rows(tmp_path / "examples.jsonl", ROWS)
    out = tmp_path / "adapter"
    code, events = run_cli(
        "--data",
        str(data),
        "--base",
        str(tiny_dir),
        "--out",
        str(out),
        "--steps",
        "3",
        "--rank",
        "4",
        "--alpha",
        "8",
        "--version",
        "v1",
        "--lr",
        "1e-2",
    )
    assert code == 0, events
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3] and all(e["steps"] == 3 for e in steps)
    assert all(np.isfinite([e["loss"], e["mean_advantage"], e["tokens_per_s"]]).all() for e in steps)
    done = events[-1]
    assert done["event"] == "done"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == done["manifest"]
    jsonschema.validate(manifest, json.loads((find_schema_dir() / "adapter-manifest.schema.json").read_text()))
    assert manifest["version"] == "v1" and manifest["examples"] == 4 and manifest["examples_used"] == 3
    assert manifest["steps"] == 3 and manifest["rank"] == 4 and manifest["parent_version"] is None

    peft_weights = load_file(out / manifest["files"]["peft_dir"] / "adapter_model.safetensors")
    reader = gguf.GGUFReader(out / manifest["files"]["gguf"])
    fields = {name: reader.fields[name] for name in reader.fields}
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "llama"
    assert bytes(fields["general.type"].parts[-1]).decode() == "adapter"
    assert bytes(fields["adapter.type"].parts[-1]).decode() == "lora"
    assert fields["adapter.lora.alpha"].parts[-1].dtype == np.float32 and fields["adapter.lora.alpha"].parts[-1][0] == 8
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == sorted(
        f"blk.{i}.{m}.weight.lora_{ab}" for i in range(2) for m in ("attn_q", "attn_v") for ab in "ab"
    )
    a = peft_weights["base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"]
    b = peft_weights["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]
    assert torch.count_nonzero(b) > 0  # trained
    np.testing.assert_array_equal(np.asarray(tensors["blk.1.attn_v.weight.lora_a"].data), a.numpy())  # (r, in)
    np.testing.assert_array_equal(np.asarray(tensors["blk.1.attn_v.weight.lora_b"].data), b.numpy())  # (out, r)

    code, events = run_cli(
        "--data",
        str(data),
        "--base",
        str(tiny_dir),
        "--out",
        str(tmp_path / "next"),
        "--adapter-in",
        str(out),
        "--steps",
        "1",
        "--version",
        "v2",
    )
    assert code == 0, events
    assert events[-1]["manifest"]["parent_version"] == "v1" and events[-1]["manifest"]["rank"] == 4


def test_killed_run_leaves_the_previous_adapter_intact(tiny_dir, tmp_path):
    data = write_rows(tmp_path / "examples.jsonl", ROWS)
    out = tmp_path / "adapter"
    code, _ = run_cli(
        "--data",
        str(data),
        "--base",
        str(tiny_dir),
        "--out",
        str(out),
        "--steps",
        "1",
        "--rank",
        "4",
        "--version",
        "v1",
    )
    assert code == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    proc = subprocess.Popen(
        [
            *CLI,
            "sdpo",
            "--data",
            str(data),
            "--base",
            str(tiny_dir),
            "--out",
            str(out),
            "--steps",
            "100000",
            "--version",
            "v2",
            "--threads",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        for line in proc.stdout:
            if json.loads(line)["event"] == "step":
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert json.loads((out / "manifest.json").read_text())["version"] == "v1"


@pytest.mark.parametrize(
    "line, expected",
    [
        (
            '{"id": "r", "x": "x", "y": "", "feedback": "f"}',
            "examples.jsonl:2: row does not match sdpo-example.schema.json at y",
        ),
        (
            '{"id": "r", "x": "x", "y": "y"}',
            "examples.jsonl:2: row does not match sdpo-example.schema.json at (row): 'feedback' is a required property",
        ),
        ('{"id": "r", "x": "x", "y": "y", "feedback": "f", "extra": 1}', "examples.jsonl:2: row does not match"),
        ('{"id": "r", "x": ', "examples.jsonl:2: not valid JSON"),
    ],
)
def test_bad_rows_are_reported_with_their_line_number(tmp_path, capsys, line, expected):
    data = tmp_path / "examples.jsonl"
    data.write_text(json.dumps(ROWS[0]) + "\n" + line + "\n")
    code = main(["sdpo", "--data", str(data), "--out", str(tmp_path / "out"), "--base", str(tmp_path)])
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 2 and events[-1]["event"] == "error" and expected in events[-1]["message"], events
    assert not (tmp_path / "out").exists()


def test_usage_errors_are_json_events(tmp_path, capsys):
    assert main(["sdpo", "--out", str(tmp_path)]) == 2
    assert "--data" in json.loads(capsys.readouterr().out)["message"]
    data = write_rows(tmp_path / "e.jsonl", [dict(ROWS[0], feedback="")])
    assert main(["sdpo", "--data", str(data), "--out", str(tmp_path / "o"), "--base", str(tmp_path / "nope")]) == 2
    assert "does not exist" in json.loads(capsys.readouterr().out.splitlines()[-1])["message"]
    assert main(["sdpo", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert main(["sdpo", "--data", str(data), "--out", str(tmp_path / "o"), "--steps", "0"]) == 2


def test_history_without_any_feedback_is_an_error(tiny_dir, tmp_path, capsys):
    data = write_rows(tmp_path / "e.jsonl", [dict(ROWS[0], feedback=""), dict(ROWS[1], feedback=" ")])
    assert main(["sdpo", "--data", str(data), "--out", str(tmp_path / "o"), "--base", str(tiny_dir)]) == 2
    assert "none of the 2 rows has feedback" in json.loads(capsys.readouterr().out.splitlines()[-1])["message"]


def test_every_training_flag_defaults_to_train_config():
    from nanoresearch_trainer.cli import build_parser, train_config
    from nanoresearch_trainer.config import TrainConfig

    args = build_parser().parse_args(["sdpo", "--data", "d.jsonl", "--out", "o"])
    defaults = TrainConfig()
    assert args.nproc == 1
    assert train_config(args, args.rank, args.alpha, args.targets.split(",")) == defaults
