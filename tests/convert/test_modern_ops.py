"""Modern CNN ops end to end: lookup tables (hardswish, sigmoid, SiLU, GELU, tanh, x·c, ...),
QMul (squeeze-and-excitation), standalone BN, channel slices/splits/shuffles, nearest resize,
and float islands (ops without an integer form) inside the exported model.

Each model is calibrated, converted and exported; the reference interpreter and ONNX Runtime
must give identical integers for every integer tensor, the simulation must agree with the
reference within 1 LSB op by op, and the program's output must stay close to the float
model's."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from agreement.simulated import locally_recomputed, simulated_integers
from torch import nn

from intq.convert import ProgramBuilder, QTensor
from intq.convert.from_graph import convert_to_program, float_islands
from intq.convert.lookup_onnx import table_from_onnx_runtime
from intq.convert.program import (
    FloatSubgraph,
    QConv2d,
    QLookup,
    QMul,
    ResizeNearest,
    Slice,
    Transpose,
)
from intq.convert.serialize import load_program, save_program
from intq.export import export_onnx, export_onnx_qdq
from intq.ptq import quantize
from intq.runtime import OrtSession, run_reference


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Activations(nn.Module):
    """conv -> each smooth activation -> conv, summed: one lookup table per activation."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.acts = nn.ModuleList([nn.Hardswish(), nn.Hardsigmoid(), nn.SiLU(), nn.Sigmoid(),
                                   nn.Tanh(), nn.GELU(), nn.GELU("tanh"), nn.LeakyReLU(0.1),
                                   nn.ELU(), nn.Mish()])
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        y = self.head(x * 0.5 + 1.0)  # scalar arithmetic: lookup tables too
        for act in self.acts:
            y = y + self.head(act(x))
        return y


class SqueezeExcite(nn.Module):
    """MobileNetV3's block: conv, hardswish, global pool -> 1x1 convs -> hardsigmoid -> mul."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.act = nn.Hardswish()
        self.fc1, self.fc2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.gate = nn.Hardsigmoid()
        self.out = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        x = self.act(self.bn(self.conv(x)))
        s = self.gate(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return self.out(x * s)


class PreActivation(nn.Module):
    """DenseNet's BN -> ReLU -> conv on a concat, and a BN after an add."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(3, 6, 1)
        self.norm = nn.BatchNorm2d(12)
        self.conv = nn.Conv2d(12, 6, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(6)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], 1)
        z = self.conv(F.relu(self.norm(y)))
        return self.norm2(z + self.a(x))


class Shuffle(nn.Module):
    """ShuffleNetV2 / GhostNet index ops: chunk, channel shuffle, slices, split, upsample."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.head = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        x = self.conv(x)
        a, b = x.chunk(2, dim=1)
        x = torch.cat((a, self.branch(b)), dim=1)
        n, c, h, w = x.size()
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)
        first, rest = torch.split(x, [3, 5], dim=1)
        y = torch.cat([x[:, :5], first], 1)
        y = F.interpolate(F.max_pool2d(y, 2), scale_factor=2, mode="nearest")
        return self.head(torch.cat([y[:, :3], rest], 1))


class Islands(nn.Module):
    """Ops without an integer form: LayerNorm over channels (permutes), a per-channel layer
    scale, a bilinear resize and a ceil-mode average pool, between integer convs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, 8).reshape(8, 1, 1))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.conv(x)
        y = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = F.interpolate(y * self.gamma, scale_factor=2, mode="bilinear", align_corners=False)
        y = F.avg_pool2d(y, 3, 2, ceil_mode=True, count_include_pad=False)
        return self.head(F.relu(y + x))


def calibrated(cls, size: int = 16):
    torch.manual_seed(0)
    model = cls().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    x = torch.randn(24, 3, size, size)
    qgm = quantize(model, x[:16], progress=False)
    return model, qgm, convert_to_program(qgm, (3, size, size)), x[16:]


def ort_tensors(program, x: np.ndarray) -> dict[str, np.ndarray]:
    return OrtSession(export_onnx(program, intermediates=True).SerializeToString()).run_all(x)


def sqnr_db(want: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((want**2).sum() / max(((want - got) ** 2).sum(), 1e-30)))


MODELS = {"activations": (Activations, QLookup, 12), "squeeze_excite": (SqueezeExcite, QMul, 1),
          "shuffle": (Shuffle, Transpose, 1)}


@pytest.mark.parametrize("name", list(MODELS) + ["pre_activation"])
def test_integer_ops_are_bit_exact_in_onnx_runtime_and_close_to_float(name):
    cls, op_type, count = MODELS.get(name, (PreActivation, QConv2d, 6))
    model, qgm, program, x = calibrated(cls)
    assert float_islands(program) == []
    assert sum(isinstance(op, op_type) for op in program.ops) == count
    ref = run_reference(program, x.numpy(), return_all=True)
    ort = ort_tensors(program, x.numpy())
    for tensor in [*program.tensors, *program.outputs]:
        np.testing.assert_array_equal(ort[tensor], ref[tensor], err_msg=tensor)
    with torch.no_grad():
        want = model(x).numpy()
    assert sqnr_db(want, ref[program.outputs[0]]) > 20


@pytest.mark.parametrize("cls", [Activations, SqueezeExcite, Shuffle])
def test_each_new_op_is_the_simulation_within_one_lsb(cls):
    """Op by op (each fed the simulation's integers), the reference is within 1 LSB of the
    simulation, and equal on at least 99% of values."""
    _, qgm, program, x = calibrated(cls)
    sim = simulated_integers(qgm, program, x)
    local = locally_recomputed(program, sim, x.numpy(), "float32_half_even")
    for name, want in sim.items():
        diff = np.abs(local[name].astype(np.int32) - want.astype(np.int32))
        assert diff.max() <= 1 and (diff == 0).mean() >= 0.99, name


def test_lookup_table_is_the_function_on_the_grid():
    _, _, program, _ = calibrated(Activations)
    op = next(o for o in program.ops if isinstance(o, QLookup) and o.function == "hardswish")
    qx, qy = program.tensors[op.inputs[0]], program.tensors[op.output]
    codes = np.arange(np.iinfo(qx.dtype).min, np.iinfo(qx.dtype).min + 256)
    real = F.hardswish(torch.from_numpy(((codes - qx.zero_point) * qx.scale).astype(np.float32)))
    want = np.clip(np.round(real.numpy() / qy.scale) + qy.zero_point, qy.qmin, qy.qmax)
    assert np.abs(op.table - want).max() <= 1 and (op.table == want).mean() > 0.99


def test_index_ops_are_lossless():
    _, _, program, _ = calibrated(Shuffle)
    kinds = {type(op) for op in program.ops}
    assert {Slice, Transpose, ResizeNearest} <= kinds
    for op in program.ops:
        if isinstance(op, Slice | Transpose | ResizeNearest):
            assert program.tensors[op.output] == program.tensors[op.inputs[0]]


def test_float_islands_run_in_onnx_runtime_between_integer_ops():
    model, qgm, program, x = calibrated(Islands)
    islands = float_islands(program)
    ops = {i.op for i in islands}
    assert {"LayerNorm", "mul", "interpolate", "avg_pool2d"} <= ops
    assert all(i.exported for i in islands)
    assert all("test_modern_ops.py:" in i.source for i in islands if i.op != "LayerNorm")
    assert sum(isinstance(op, FloatSubgraph) for op in program.ops) == len(islands)
    assert not any(m.training for m in qgm.modules())  # exporting islands left eval mode on
    ref = run_reference(program, x.numpy(), return_all=True)
    ort = ort_tensors(program, x.numpy())
    for tensor in program.tensors:  # the integer parts are identical
        np.testing.assert_array_equal(ort[tensor], ref[tensor], err_msg=tensor)
    out = program.outputs[0]
    np.testing.assert_allclose(ort[out], ref[out], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        want = model(x).numpy()
        sim = qgm(x).numpy()
    np.testing.assert_allclose(ref[out], sim, rtol=1e-3, atol=1e-3 * np.abs(sim).max())
    assert sqnr_db(want, ref[out]) > 20


def test_float_island_program_round_trips(tmp_path):
    _, _, program, x = calibrated(Islands)
    save_program(program, tmp_path / "p.safetensors")
    loaded = load_program(tmp_path / "p.safetensors")
    assert loaded == program
    assert float_islands(loaded) == float_islands(program)
    for name, value in run_reference(loaded, x.numpy()).items():
        np.testing.assert_array_equal(value, run_reference(program, x.numpy())[name])


class Unexportable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return torch.special.bessel_j0(self.conv(x))


def test_an_island_onnx_cannot_take_is_named_with_its_source_and_runs_in_the_reference():
    model, _, program, x = calibrated(Unexportable)
    [island] = float_islands(program)
    assert not island.exported and "torch.onnx cannot export it" in island.why_not
    assert island.node == "special_bessel_j0" and "test_modern_ops.py:" in island.source
    out = run_reference(program, x.numpy())[program.outputs[0]]
    with torch.no_grad():
        assert sqnr_db(model(x).numpy(), out) > 20
    with pytest.raises(ValueError, match="callable FloatOp cannot be exported"):
        export_onnx(program)


LOOKUPS = [("hardswish", ()), ("hardsigmoid", ()), ("sigmoid", ()), ("tanh", ()), ("silu", ()),
           ("mish", ()), ("gelu", ("none",)), ("gelu", ("tanh",)), ("leaky_relu", (0.1,)),
           ("elu", (1.0,)), ("softplus", (1.0, 20.0)), ("clamp", (-1.0, None)),
           ("add", (3.0, 0)), ("sub", (3.0, 1)), ("mul", (0.5, 0)), ("truediv", (6.0, 0))]


@pytest.mark.parametrize(("function", "params"), LOOKUPS)
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_onnx_runtime_computes_the_table_at_every_position(function, params, dtype):
    """The fast export (DequantizeLinear -> f -> QuantizeLinear) gives table[q] for every
    element of a large odd-sized tensor: ONNX Runtime treats every position alike."""
    b = ProgramBuilder()
    low = -128 if dtype == "int8" else 0
    q = b.quantize(b.input("x", (None, 37, 29, 31)), QTensor(0.04, low + 131, dtype))
    table = table_from_onnx_runtime(function, params, b.qtensor(q), QTensor(0.03, low + 77,
                                                                             dtype))
    y = b.lookup(q, table, QTensor(0.03, low + 77, dtype), function=function, params=params)
    program = b.build([b.dequantize(y, name="out")])
    model = export_onnx(program, intermediates=True)
    assert "Gather" not in {n.op_type for n in model.graph.node}
    x = np.random.default_rng(0).normal(0, 3, (2, 37, 29, 31)).astype(np.float32)
    got = OrtSession(model.SerializeToString()).run_all(x)
    want = run_reference(program, x, return_all=True)
    np.testing.assert_array_equal(got[y], want[y])


@pytest.mark.parametrize("cls", [Activations, SqueezeExcite, Shuffle, Islands])
def test_qdq_export_gives_the_same_integers(cls):
    _, _, program, x = calibrated(cls)
    qop = ort_tensors(program, x.numpy())
    qdq = OrtSession(export_onnx_qdq(program, intermediates=True).SerializeToString()).run_all(
        x.numpy())
    for tensor in program.tensors:
        np.testing.assert_array_equal(qdq[tensor], qop[tensor], err_msg=tensor)
