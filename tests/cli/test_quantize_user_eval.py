"""``intq quantize`` on a user model with ``.npy`` calibration and no ``--eval``: evaluated
on samples held out of that array (normalized like it), never on a zoo dataset normalized
its own way; and ``--json`` stays one valid JSON document when the factory prints."""

import json

import numpy as np
import pytest
import torch

import intq.cli
from intq.cli import main

MODEL_FILE = '''
import torch
from torch import nn

def build():
    print("hello from the factory")
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
'''


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setattr(intq.cli, "_COMMANDS", ("quantize",))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def user(tmp_path):
    (tmp_path / "m.py").write_text(MODEL_FILE)
    rng = np.random.default_rng(0)
    for name, n in (("big", 40), ("small", 8)):
        # 28x28 is Fashion-MNIST's shape: the old default evaluated on that dataset instead
        np.save(tmp_path / f"{name}.npy", rng.standard_normal((n, 1, 28, 28)).astype(np.float32))
    return tmp_path


def _run(user, capsys, data: str, *extra: str):
    argv = ["quantize", f"{user / 'm.py'}:build", "--calib", str(user / data), "--repeats",
            "1", "-o", str(user / "m.onnx"), "--json", *extra]
    assert main(argv) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_npy_calibration_is_evaluated_on_its_own_held_out_samples(user, capsys):
    report, err = _run(user, capsys, "big.npy", "--calib-size", "30")
    assert "hello from the factory" in err and "held out from calibration" in err
    assert report["calibration"]["samples"] == 30
    assert report["evaluation"]["samples"] == 10
    assert report["evaluation"]["data"].endswith("big.npy[30:40] (held out)")
    assert 0 <= report["agreement"]["top1"] <= 1


def test_default_sizes_split_a_small_array_80_20(user, capsys):
    report, _ = _run(user, capsys, "big.npy")
    assert (report["calibration"]["samples"], report["evaluation"]["samples"]) == (32, 8)


@pytest.mark.parametrize("data, extra", [("small.npy", ()), ("big.npy", ("--calib-size", "40"))])
def test_no_samples_left_means_no_judgement(user, capsys, data, extra):
    report, err = _run(user, capsys, data, *extra)
    assert report["evaluation"] is None and "agreement" not in report
    assert "accuracy cannot be judged; give --eval DATA" in err
