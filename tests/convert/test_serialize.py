"""save_program/load_program: bit-exact round trips, requantization recomputed from the scales
(stored only when it differs), documented bit packing, and a ValueError for every kind of
malformed file (never pickle, never a crash of another type)."""

import copy
import json
import struct

import numpy as np
import pytest

from intq.convert import ProgramBuilder, QTensor, load_program, save_program
from intq.convert.program import AddRequant, IntProgram, QAdd, Requant
from intq.convert.serialize import atomic_write_bytes, pack_bits, unpack_bits
from intq.convert.synthetic import random_cnn


def _header(path) -> dict:
    raw = path.read_bytes()
    return json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])


def _requant_fields(op) -> dict:
    """Every requant field as raw bytes (arrays) or exact Python values (AddRequant)."""
    if isinstance(op.requant, AddRequant):
        return dict(vars(op.requant))
    return {name: (getattr(op.requant, name).dtype, getattr(op.requant, name).tobytes())
            for name in ("multiplier_f32", "m0", "shift")}


@pytest.mark.parametrize("bits,dtype", [(2, "uint8"), (3, "int8"), (4, "uint8"), (5, "int8"),
                                        (7, "int16"), (8, "uint8"), (11, "int8"),
                                        (16, "uint16")])
def test_round_trip_is_bit_exact(tmp_path, bits, dtype):
    program = random_cnn(bits, dtype=dtype, weight_bits=bits, per_channel=bits != 8, batch=None)
    path = tmp_path / "p.intq"
    save_program(program, path)
    loaded = load_program(path)
    assert loaded == program
    for a, b in zip(loaded.ops, program.ops, strict=True):
        if hasattr(a, "weight"):
            assert a.weight.dtype == b.weight.dtype and a.weight.tobytes() == b.weight.tobytes()
        if hasattr(a, "requant"):
            assert _requant_fields(a) == _requant_fields(b), a.label


def test_builder_requant_is_derived_not_stored(tmp_path):
    program = random_cnn(0, weight_bits=4)
    path = tmp_path / "p.intq"
    save_program(program, path)
    header = _header(path)
    assert header["__metadata__"]["intq.version"] == "4"
    assert not [k for k in header if "requant" in k]
    ops = json.loads(header["__metadata__"]["intq.program"])["ops"]
    kinds = {op["type"] for op in ops if op.get("requant") == "derived"}
    assert kinds == {"QConv2d", "QLinear", "QAdd", "QAvgPool2d", "QGlobalAvgPool"}
    assert all(op.get("requant", "derived") == "derived" for op in ops)


@pytest.mark.parametrize("weight_bits", [4, 8])
def test_float_output_linear_round_trips_with_a_null_requant(tmp_path, weight_bits):
    """A float-output QLinear is saved as "requant": null with no requantization arrays and
    comes back identical (requant None, same weights, scales and bias bytes), as does the
    float Reshape after it."""
    program = random_cnn(3, weight_bits=weight_bits, float_logits=True)
    path = tmp_path / "p.intq"
    save_program(program, path)
    header = _header(path)
    ops = json.loads(header["__metadata__"]["intq.program"])["ops"]
    linear = next(op for op in ops if op["type"] == "QLinear")
    assert linear["requant"] is None
    assert not [k for k in header if "requant" in k]
    loaded = load_program(path)
    assert loaded == program
    op = loaded.producer(loaded.producer("y").inputs[0])
    assert op.requant is None and op.float_output and op.output not in loaded.tensors
    assert op.bias.tobytes() == program.producer(op.output).bias.tobytes()


def test_version_2_files_load_unchanged(tmp_path):
    """Version 3 only added "requant": null; a version 2 file (none of those) still loads."""
    program = random_cnn(0, weight_bits=4)
    path = tmp_path / "p.intq"
    save_program(program, path)
    _rewrite(path, edit_header=lambda h: h.update({"intq.version": "2"}))
    assert load_program(path) == program


def _with_requant(op, requant):
    """A copy of `op` with another requant (same channel count, so still a valid op)."""
    new = copy.copy(op)
    object.__setattr__(new, "requant", requant)
    return new


def _off_by_one(op):
    """op's requant with one field changed by one unit, so it no longer matches the scales."""
    r = op.requant
    if isinstance(r, AddRequant):
        return AddRequant(**{**vars(r), "m0_out": r.m0_out + 1})
    if op.output.startswith("conv"):
        return Requant(np.nextafter(r.multiplier_f32, np.float32(1)), r.m0, r.shift)
    return Requant(r.multiplier_f32, r.m0 + 1, r.shift)


def test_custom_requant_is_stored_and_round_trips(tmp_path):
    program = random_cnn(1, weight_bits=4)
    ops = [_with_requant(op, _off_by_one(op)) if hasattr(op, "requant") and i % 2 else op
           for i, op in enumerate(program.ops)]
    custom = IntProgram(program.inputs, program.outputs, program.tensors, ops)
    changed = {i for i, op in enumerate(ops) if hasattr(op, "requant") and i % 2}
    assert len(changed) >= 3 and any(isinstance(ops[i], QAdd) for i in changed)
    path = tmp_path / "p.intq"
    save_program(custom, path)
    loaded = load_program(path)
    assert loaded == custom and loaded != program
    for a, b in zip(loaded.ops, custom.ops, strict=True):
        if hasattr(a, "requant"):
            assert _requant_fields(a) == _requant_fields(b), a.label
    header = _header(path)
    stored = {int(k.split(".")[1]) for k in header if ".requant." in k}
    entries = json.loads(header["__metadata__"]["intq.program"])["ops"]
    assert stored | {i for i in changed if isinstance(ops[i], QAdd)} == changed
    assert all((entries[i]["requant"] == "derived") == (i not in changed)
               for i, op in enumerate(ops) if hasattr(op, "requant"))


def test_per_channel_requant_with_per_tensor_weight_scale_is_stored(tmp_path):
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (1, 1, 4, 4)), QTensor(0.1, 0))
    c = b.conv2d(q, np.array([[[[1]]], [[[2]]]]), 0.05, QTensor(0.2, 0))
    program = b.build([b.dequantize(c)])
    r = program.ops[1].requant
    per_channel = Requant(np.repeat(r.multiplier_f32, 2), np.repeat(r.m0, 2),
                          np.repeat(r.shift, 2))
    ops = (program.ops[0], _with_requant(program.ops[1], per_channel), program.ops[2])
    custom = IntProgram(program.inputs, program.outputs, program.tensors, ops)
    save_program(custom, tmp_path / "p")
    assert load_program(tmp_path / "p").ops[1].requant.m0.tolist() == [r.m0[0]] * 2


def test_float_ops_and_metadata_round_trip(tmp_path):
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (1, 4)), QTensor(0.1, 128))
    d = b.dequantize(q)
    s = b.float_op(b.float_op(d, "sigmoid"), "softmax", {"axis": 0})
    program = b.build([b.float_op([s, d], "mul")], metadata={"model": "tiny"})
    save_program(program, tmp_path / "p")
    assert load_program(tmp_path / "p") == program


def test_four_bit_packing_is_low_nibble_first():
    packed = pack_bits(np.array([1, -2, 7, -8, 3]), 4)
    assert packed.tolist() == [0xE1, 0x87, 0x03]
    assert unpack_bits(packed, 4, 5).tolist() == [1, -2, 7, -8, 3]


@pytest.mark.parametrize("bits", [2, 3, 5, 6, 7])
def test_packing_round_trips_every_code(bits):
    values = np.arange(-(1 << (bits - 1)), 1 << (bits - 1))
    values = np.concatenate([values, values[::-1], values[:3]])
    packed = pack_bits(values, bits)
    assert len(packed) == -(-len(values) * bits // 8)
    assert np.array_equal(unpack_bits(packed, bits, len(values)), values)


def test_callable_float_op_cannot_be_saved(tmp_path):
    b = ProgramBuilder()
    d = b.dequantize(b.quantize(b.input("x", (1,)), QTensor(0.1, 0)))
    program = b.build([b.float_op(d, "callable", fn=np.exp)])
    with pytest.raises(ValueError, match="callable FloatOp cannot be saved"):
        save_program(program, tmp_path / "p")
    assert not list(tmp_path.iterdir())


def _rewrite(path, edit_header=None, edit_doc=None, arrays_edit=None):
    """Re-encode the file at `path` with edits to its metadata, program JSON or arrays."""
    from safetensors.numpy import load, save

    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])["__metadata__"]
    arrays = load(raw)
    if edit_doc:
        doc = json.loads(header["intq.program"])
        edit_doc(doc)
        header["intq.program"] = json.dumps(doc)
    if edit_header:
        edit_header(header)
    if arrays_edit:
        arrays_edit(arrays)
    path.write_bytes(save(arrays, metadata=header))


def _op(doc, kind):
    return next(op for op in doc["ops"] if op["type"] == kind)


MALFORMED = {
    "wrong format": dict(edit_header=lambda h: h.update({"intq.format": "other"})),
    "future version": dict(edit_header=lambda h: h.update({"intq.version": "5"})),
    "version 1": dict(edit_header=lambda h: h.update({"intq.version": "1"})),
    "no version": dict(edit_header=lambda h: h.pop("intq.version")),
    "requant missing": dict(edit_doc=lambda d: _op(d, "QConv2d").pop("requant")),
    "requant unknown": dict(edit_doc=lambda d: _op(d, "QAvgPool2d").update({"requant": "x"})),
    "requant stored without arrays": dict(
        edit_doc=lambda d: _op(d, "QLinear").update({"requant": "stored"})),
    "null requant on a conv": dict(edit_doc=lambda d: _op(d, "QConv2d").update({"requant": None})),
    "add requant object incomplete": dict(
        edit_doc=lambda d: _op(d, "QAdd").update({"requant": {"m0_a": 1}})),
    "requant on a lossless op": dict(
        edit_doc=lambda d: _op(d, "QMaxPool2d").update({"requant": "derived"})),
    "stray requant arrays": dict(arrays_edit=lambda a: a.update(
        {"ops.1.requant.m0": np.ones(8, np.int32)})),
    "string avgpool kernel": dict(
        edit_doc=lambda d: _op(d, "QAvgPool2d").update({"kernel": ["x", 10**12]})),
    "not json": dict(edit_header=lambda h: h.update({"intq.program": "{oops"})),
    "extra key": dict(edit_doc=lambda d: d.update({"evil": 1})),
    "unknown op": dict(edit_doc=lambda d: d["ops"][1].update({"type": "Exec"})),
    "string stride": dict(edit_doc=lambda d: _op(d, "QConv2d").update({"stride": "2"})),
    "zero point out of range": dict(
        edit_doc=lambda d: next(iter(d["tensors"].values())).update({"zero_point": 999})),
    "bits mismatch": dict(edit_doc=lambda d: _op(d, "QConv2d").update({"weight_bits": 8})),
    "bad weight shape": dict(
        edit_doc=lambda d: _op(d, "QConv2d").update({"weight_shape": [8, 3, 3]})),
    "dangling input": dict(edit_doc=lambda d: d["ops"][1].update({"inputs": ["nowhere"]})),
    "missing array": dict(arrays_edit=lambda a: a.pop("ops.1.bias")),
    "extra array": dict(arrays_edit=lambda a: a.update({"payload": np.zeros(3, np.uint8)})),
    "wrong dtype": dict(arrays_edit=lambda a: a.update(
        {"ops.1.bias": a["ops.1.bias"].astype(np.int64)})),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_raise_value_error(tmp_path, case):
    path = tmp_path / "p.intq"
    save_program(random_cnn(0, weight_bits=4), path)
    _rewrite(path, **MALFORMED[case])
    with pytest.raises(ValueError, match="p.intq"):
        load_program(path)


@pytest.mark.parametrize("data", [b"", b"\x00" * 7, b"garbage" * 20,
                                  struct.pack("<Q", 10**9) + b"{}"])
def test_truncated_or_garbage_files_raise_value_error(tmp_path, data):
    path = tmp_path / "bad"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="bad"):
        load_program(path)


def test_nonzero_padding_bits_raise_value_error(tmp_path):
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (1, 1, 4, 4)), QTensor(0.1, 0))
    c = b.conv2d(q, np.array([[[[1, -2, 3]]]]), 0.1, QTensor(0.1, 0), weight_bits=3)
    path = tmp_path / "p.intq"
    save_program(b.build([b.dequantize(c)]), path)
    assert load_program(path).ops[1].weight.ravel().tolist() == [1, -2, 3]
    _rewrite(path, arrays_edit=lambda a: a.update(
        {"ops.1.weight": a["ops.1.weight"] | np.array([0, 0x80], np.uint8)}))
    with pytest.raises(ValueError, match="zero padding bits"):
        load_program(path)


@pytest.mark.parametrize("version", ["1", "5"])
def test_other_format_versions_are_refused_with_a_clear_message(tmp_path, version):
    path = tmp_path / "p.intq"
    save_program(random_cnn(0), path)
    _rewrite(path, edit_header=lambda h: h.update({"intq.version": version}))
    with pytest.raises(ValueError, match=f"p.intq: intq program format version '{version}' is "
                                         "not supported; this intq reads versions 2, 3, 4"):
        load_program(path)


def test_truncated_real_file_raises_value_error(tmp_path):
    path = tmp_path / "p.intq"
    save_program(random_cnn(0), path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError):
        load_program(path)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "f"
    atomic_write_bytes(path, b"old")

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
