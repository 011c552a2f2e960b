"""Inputs shared by the reliability tests: a tiny model file, random zoo weights, good data, and
the CLI run in-process with its exit code, stdout and stderr; file snapshots for 'nothing was
written, nothing was changed'."""

import hashlib
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from intq.cli import main
from intq.zoo import MODEL_ZOO

ZOO_MODEL = "mobilenet-v1-fmnist"

TINY = textwrap.dedent(
    """
    import sys

    import torch
    from torch import nn


    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4, 10))


    def broken():
        raise RuntimeError("no GPU here")


    def not_a_model():
        return "a model"


    def exits():
        sys.exit(0)


    def identity():
        return nn.Identity()
    """
)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread():
    """The 2 cores are shared: one torch thread (small convolutions are faster that way)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="package")
def inputs(tmp_path_factory) -> Path:
    """Good inputs: tiny.py (factories above), its weights, random zoo weights, 12x12 and
    28x28 data (.npy, labelled .npz)."""
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "tiny.py").write_text(TINY)
    namespace: dict = {}
    exec(TINY, namespace)
    save_file(namespace["build"]().state_dict(), folder / "tiny.safetensors")
    torch.manual_seed(0)
    zoo_state = MODEL_ZOO[ZOO_MODEL].build().state_dict()
    save_file({k: v.contiguous() for k, v in zoo_state.items()}, folder / "v1.safetensors")
    rng = np.random.default_rng(0)
    for size, n in ((12, 16), (28, 64)):
        x = rng.standard_normal((n, 1, size, size)).astype(np.float32)
        np.save(folder / f"x{size}.npy", x)
        np.savez(folder / f"xy{size}.npz", x=x, y=rng.integers(0, 10, n))
    return folder


def run_cli(argv: list[str], capsys) -> Run:
    """``intq.cli.main(argv)`` in this process: exit code, stdout, stderr."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def assert_one_line_error(run: Run, code: int, *fragments: str) -> str:
    """Exit ``code``, nothing on stdout, no traceback, and exactly one 'intq: error: ' line on
    stderr, the last one (only 'intq: ' notes before it); it contains every fragment."""
    assert run.code == code, run
    lines = run.err.splitlines()
    assert run.out == "" and "Traceback" not in run.err, run
    assert lines and lines[-1].startswith("intq: error: "), run
    assert all(line.startswith("intq: ") for line in lines), run
    assert sum(line.startswith("intq: error: ") for line in lines) == 1, run
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file and folder under ``folders`` (hidden ones too) -> sha256 of its bytes."""
    found = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in dirs:
                found[os.path.join(root, name)] = "dir"
            for name in files:
                path = Path(root, name)
                if os.access(path, os.R_OK) and path.is_file():
                    found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
                else:
                    found[str(path)] = "unreadable"
    return found
