"""``intq quantize`` on models with ops that have no integer form: the written ONNX model
keeps them as float islands, the report lists each with its source line and reason, and a
node that cannot be exported stops the run with one line that names it."""

import json
import textwrap

import numpy as np
import pytest

from intq.cli import main
from intq.runtime.onnxruntime import OrtSession

MODELS = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Gate(nn.Module):
        def forward(self, x):
            if x.mean() > 0:
                return x * 2
            return x


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.norm = nn.LayerNorm(8)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            x = self.conv(x)
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


    class Gated(Net):
        def __init__(self):
            super().__init__()
            self.gate = Gate()

        def forward(self, x):
            return super().forward(self.gate(x))


    def net():
        torch.manual_seed(0)
        return Net()


    def gated():
        torch.manual_seed(0)
        return Gated()
    """
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("island_inputs")
    (folder / "models.py").write_text(MODELS)
    rng = np.random.default_rng(0)
    np.save(folder / "x.npy", rng.standard_normal((16, 1, 12, 12)).astype(np.float32))
    return folder


def _argv(files, factory: str, out, *extra: str) -> list[str]:
    return ["quantize", f"{files / 'models.py'}:{factory}", "--calib", str(files / "x.npy"),
            "--repeats", "2", "-o", str(out), *extra]


def test_layer_norm_stays_float_in_the_written_model(files, tmp_path, capsys):
    out = tmp_path / "net.onnx"
    assert main(_argv(files, "net", out, "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    [island] = report["float_islands"]
    assert island["op"] == "LayerNorm" and island["exported"] and island["node"] == "norm"
    assert report["float_ops"] == 1 and out.is_file()
    x = np.random.default_rng(1).standard_normal((4, 1, 12, 12)).astype(np.float32)
    assert OrtSession(out).run(x).shape == (4, 10)


def test_keep_float_writes_a_model_and_the_human_report_lists_the_islands(files, tmp_path,
                                                                           capsys):
    out = tmp_path / "kept.onnx"
    assert main(_argv(files, "net", out, "--keep-float", "conv")) == 0
    text = capsys.readouterr().out
    assert "float ops    2 stay float in the model:" in text
    assert "  conv (Conv2d" in text and "kept in float (leaf module, --keep-float)" in text
    assert "  norm (LayerNorm" in text and out.is_file()


def test_an_island_that_cannot_be_exported_is_one_line_naming_node_line_and_way_out(
        files, tmp_path, capsys):
    out = tmp_path / "gated.onnx"
    assert main(_argv(files, "gated", out)) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "".join(lines) and len(
        [x for x in lines if x.startswith("intq: error:")]) == 1
    err = lines[-1]
    assert err.startswith("intq: error: node gate (Gate at models.py:")
    assert "torch.fx cannot trace it: Gate uses a traced tensor in Python control flow" in err
    assert "models.py" in err and "if x.mean() > 0:" in err
    assert "not exportable: its ONNX export does not reproduce torch" in err
    assert "rewrite it with ops torch.onnx can export, or run it outside the model" in err
    assert not out.exists()
