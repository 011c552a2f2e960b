"""ONNX files intq did not write, given to ``intq eval`` / ``intq bench``: control flow is
refused, every run has a time and a memory budget (``intq.runtime.budget``), odd batch
dimensions get defined results, and ONNX Runtime's own log never reaches the terminal."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

import intq
from intq.eval.latency import ort_session
from intq.runtime import OrtSession
from intq.runtime.budget import BudgetExceeded, RunBudget

from . import hostile_onnx
from .conftest import assert_one_line_error, run_cli

INTQ = Path(sys.executable).with_name("intq")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile_onnx")
    for name, batch in (("neg", -1), ("sym", "N"), ("zero", 0), ("four", 4), ("one", 1)):
        hostile_onnx.classifier(folder / f"{name}.onnx", batch)
    hostile_onnx.classifier(folder / "warns.onnx", 1, unused_initializer=True)
    hostile_onnx.classifier(folder / "evil_name.onnx", 1, input_type=TensorProto.INT64,
                            input_name="x\nintq: error: pwned\x1b[31m")
    hostile_onnx.loop(folder / "loop.onnx")
    hostile_onnx.loop(folder / "short_loop.onnx", trips=3)
    hostile_onnx.nested_if(folder / "if.onnx")
    hostile_onnx.expand_bomb(folder / "bomb.onnx", values=2**28)
    hostile_onnx.expand_bomb(folder / "bomb8g.onnx", values=2**31)
    hostile_onnx.slow_matmuls(folder / "slow.onnx")
    rng = np.random.default_rng(0)
    np.save(folder / "x.npy", rng.standard_normal((10, 1, 12, 12)).astype(np.float32))
    return folder


@pytest.mark.parametrize("command", ["eval", "bench"])
@pytest.mark.parametrize("model, first", [("loop", "Loop 'spin'"), ("short_loop", "Loop 'spin'"),
                                          ("if", "If 'choose'")])
def test_control_flow_is_refused_at_once(command, model, first, models, capsys):
    """A Loop of 2^62 iterations used to hang both commands; a short loop and an If are
    refused alike (their work is not bounded by the file)."""
    argv = [command, models / f"{model}.onnx"]
    if command == "eval":
        argv += ["--data", models / "x.npy"]
    start = time.monotonic()
    run = run_cli(argv, capsys)
    assert time.monotonic() - start < 10
    assert_one_line_error(run, 1, f"refusing {models}/{model}.onnx: it has 1 control-flow "
                          f"node(s) (first: {first})", "no Loop, Scan or If")


def test_a_run_over_its_time_budget_is_stopped(models):
    """The budget's watchdog stops a 2^62-iteration Loop (library level, where the CLI's
    refusal does not apply) and a loop-free chain of big matmuls."""
    for name in ("loop", "slow"):
        session = ort_session(models / f"{name}.onnx", budget=True)
        budget = RunBudget(name, seconds=0.3)
        feed = {session.get_inputs()[0].name:
                np.ones([d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape],
                        np.float32)}
        start = time.monotonic()
        with pytest.raises(BudgetExceeded, match=f"{name} ran longer than 0.3 s and was "
                           "stopped; raise INTQ_ORT_SECONDS"):
            budget.run(session, None, feed)
        assert time.monotonic() - start < 10


def test_bench_stops_a_slow_model_at_the_budget(models, capsys, monkeypatch):
    monkeypatch.setenv("INTQ_ORT_SECONDS", "0.3")
    run = run_cli(["bench", models / "slow.onnx", "--warmup", "0", "--repeats", "1"], capsys)
    assert_one_line_error(run, 1, f"{models}/slow.onnx ran longer than 0.3 s")


def test_eval_stops_a_slow_model_at_the_budget(models, capsys, monkeypatch):
    """eval's session carries the same budget (OrtSession(budget=True))."""
    monkeypatch.setenv("INTQ_ORT_SECONDS", "0.3")
    session = OrtSession(models / "slow.onnx", budget=True)
    with pytest.raises(BudgetExceeded, match="slow.onnx ran longer than 0.3 s"):
        session.run(np.ones((1, 1), np.float32))


def test_memory_bomb_is_stopped_by_the_arena_cap(models):
    """An Expand to 8 GiB from a 200-byte file: refused by the capped arena (4 GiB by
    default) before any of it is allocated."""
    session = OrtSession(models / "bomb8g.onnx", budget=True)
    with pytest.raises(BudgetExceeded, match="needs more memory than the limit of"):
        session.run(np.ones((1, 1), np.float32))


def test_memory_budget_is_configurable_in_the_real_executable(models, tmp_path):
    """INTQ_ORT_MEMORY_BYTES=64 MiB (the cap is fixed per process): a 1 GiB Expand is one
    error line."""
    env = {**os.environ, "INTQ_ORT_MEMORY_BYTES": str(64 << 20),
           "PYTHONPATH": str(Path(intq.__file__).parents[1])}
    bomb = subprocess.run([str(INTQ), "bench", str(models / "bomb.onnx"), "--warmup", "0",
                           "--repeats", "1"], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)
    assert bomb.returncode == 1 and bomb.stdout == "", bomb
    assert bomb.stderr.startswith(f"intq: error: {models}/bomb.onnx needs more memory than "
                                  "the limit of 64 MiB") and bomb.stderr.count("\n") == 1


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf"])
def test_a_malformed_budget_is_a_usage_error(value, models, capsys, monkeypatch):
    monkeypatch.setenv("INTQ_ORT_SECONDS", value)
    run = run_cli(["bench", models / "one.onnx"], capsys)
    assert_one_line_error(run, 2, f"environment variable INTQ_ORT_SECONDS={value!r}: give a "
                          "positive number")


@pytest.mark.parametrize("batch", ["neg", "sym", "four", "one"])
def test_eval_handles_every_batch_dimension(batch, models, capsys):
    """-1 (used to build no batches: a traceback) and a symbol are dynamic; a fixed batch
    of 4 gets 10 samples in zero-padded batches of 4: the logits are the same every time."""
    run = run_cli(["eval", models / f"{batch}.onnx", "--data", models / "x.npy", "--json",
                   "--batch-size", "3"], capsys)
    assert run.code == 0, run
    assert '"samples": 10' in run.out
    reference = run_cli(["eval", models / "sym.onnx", "--data", models / "x.npy", "--json"],
                        capsys)
    assert run.out.split('"mean_max_softmax"')[1] == reference.out.split(
        '"mean_max_softmax"')[1]


def test_zero_batch_is_refused(models, capsys):
    """bench used to time an empty input and report "batch 1"; eval gave ORT's message."""
    run = run_cli(["bench", models / "zero.onnx"], capsys)
    assert_one_line_error(run, 1, "has shape [0, 1, 12, 12]: a batch of 0 samples, nothing "
                          "to time")
    run = run_cli(["eval", models / "zero.onnx", "--data", models / "x.npy"], capsys)
    assert_one_line_error(run, 1, "the input has a dimension of size 0")


def test_bench_reports_the_batch_each_model_ran_with(models, capsys):
    run = run_cli(["bench", models / "four.onnx", "--vs", models / "neg.onnx", "--batch", "2",
                   "--repeats", "2", "--warmup", "0"], capsys)
    assert run.code == 0 and "batches 4 / 2" in run.out, run


@pytest.mark.parametrize("command", ["eval", "bench"])
def test_onnx_runtime_never_speaks(command, models, capfd):
    """A model ONNX Runtime warns about (an unused initializer: a coloured, timestamped
    '[W:onnxruntime ...]' line on stderr) and one it cannot run: only intq's lines."""
    from intq.cli import main

    for model, code in (("warns", 0), ("evil_name", 1)):
        argv = [command, str(models / f"{model}.onnx")]
        argv += ["--data", str(models / "x.npy")] if command == "eval" else ["--repeats", "1"]
        capfd.readouterr()
        assert main(argv) == code
        err = capfd.readouterr().err
        assert "onnxruntime" not in err and "\x1b" not in err, err
        assert all(line.startswith("intq: ") for line in err.splitlines()), err


@pytest.mark.parametrize("command", ["eval", "bench"])
def test_names_with_control_characters_are_escaped(command, models, tmp_path, capsys):
    """A file name holding a newline and an ANSI escape, and a model whose input is named
    'x\\nintq: error: pwned\\x1b[31m': the error stays one line and no escape gets through."""
    evil = tmp_path / "m\nintq: error: fake\x1b[2J.onnx"
    evil.write_bytes(b"not onnx")
    cases = [(evil, "m\\nintq: error: fake\\x1b[2J.onnx")]
    if command == "bench":
        cases.append((models / "evil_name.onnx", "'x\\nintq: error: pwned\\x1b[31m'"))
    else:
        cases.append((models / "evil_name.onnx", "ONNX Runtime failed on"))
    for path, escaped in cases:
        argv = [command, path]
        argv += ["--data", models / "x.npy"] if command == "eval" else ["--repeats", "1"]
        run = run_cli(argv, capsys)
        assert_one_line_error(run, 1, escaped)
        assert "\x1b" not in run.err
