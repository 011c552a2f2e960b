"""The outside probe's inputs (issue 16) and their neighbours: huge labels, over-long names,
outputs naming inputs or the zoo's shipped weights or devices, non-finite hyper-parameters,
names with control characters, huge .npy headers and .npz archives that expand to gigabytes.
Each case: its exit code, one 'intq: error:' line, no file written, no input changed (the
shipped zoo files included)."""

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from intq.zoo.registry import WEIGHTS_DIR

from .conftest import ZOO_MODEL, assert_one_line_error, run_cli, snapshot

_LONG = "a" * 300
_QN = "quantize {i}/tiny.py:build --calib {i}/x12.npy"
_Q = f"{_QN} -o {{o}}/m.onnx"
_QS = "quantize {i}/tiny.py:build --input-shape 1,12,12 -o {o}/m.onnx"
_ZOO_W = f"{ZOO_MODEL} --weights {{i}}/v1.safetensors"
_QAT = f"qat {_ZOO_W} --steps 1 --n 32 -o {{o}}/q.onnx"
_W = "{w}/" + f"{ZOO_MODEL}.safetensors"


def _npy_header(shape, descr="<f4", pad: int = 0, version: int = 1) -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    header = header.encode() + b" " * pad
    size = 4 if version == 2 else 2
    header += b" " * (-(len(header) + 8 + size + 1) % 64) + b"\n"
    return (b"\x93NUMPY" + bytes([version, 0]) + len(header).to_bytes(size, "little") + header)


def _zip_array(archive: zipfile.ZipFile, name: str, shape, total_bytes: int) -> None:
    """A member ``name`` with an array of zeros written in 1 MiB chunks (never in memory)."""
    with archive.open(name, "w", force_zip64=True) as f:
        f.write(_npy_header(shape))
        chunk = bytes(1 << 20)
        for start in range(0, total_bytes, len(chunk)):
            f.write(chunk[: min(len(chunk), total_bytes - start)])


@pytest.fixture(scope="module")
def probe(tmp_path_factory, inputs) -> Path:
    b = tmp_path_factory.mktemp("probe")
    x12 = np.load(inputs / "x12.npy")[:4]
    x28 = np.zeros((32, 1, 28, 28), np.float32)
    np.savez(b / "uint64.npz", x=x12, y=np.full(4, 2**64 - 1, np.uint64))
    np.savez(b / "uint32.npz", x=x12, y=np.array([0, 1, 2, 4_000_000_000], np.uint32))
    np.savez(b / "int64_huge.npz", x=x12, y=np.array([0, 1, 2, 2**40], np.int64))
    np.savez(b / "uint64_28.npz", x=x28, y=np.full(32, 2**64 - 1, np.uint64))
    np.savez(b / "controls.npz", **{"\x1b[31mdata\nintq: error: fake": x12})
    (b / "big_header.npy").write_bytes(_npy_header((4, 1, 12, 12), pad=20000, version=2)
                                       + x12.tobytes())
    with zipfile.ZipFile(b / "big_header.npz", "w") as z:
        z.writestr("x.npy", _npy_header((4, 1, 12, 12), pad=20000, version=2) + x12.tobytes())
    with zipfile.ZipFile(b / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        _zip_array(z, "x.npy", (4096, 1, 64, 64), 4096 * 64 * 64 * 4)  # 64 MiB of zeros
    np.savez(b / "fortran.npz", x=np.asfortranarray(np.zeros((4096, 1, 12, 12), np.float32)))
    os.mkfifo(b / "fifo.onnx")
    os.mkfifo(b / "fifo.safetensors")
    for name in ("null.onnx", "null.safetensors"):
        os.symlink("/dev/null", b / name)
    os.symlink(WEIGHTS_DIR / f"{ZOO_MODEL}.safetensors", b / "shipped_link.safetensors")
    os.link(inputs / "tiny.safetensors", b / "hardlink.safetensors")
    return b


def _case(argv: str, code: int, message: str, case_id: str, env: dict | None = None):
    return pytest.param(argv, code, message, env or {}, id=case_id)


_ARRAYS = {"INTQ_MAX_ARRAY_BYTES": str(1 << 20)}
CASES = [
    # 1. tracebacks: huge unsigned labels, over-long names, huge seeds
    _case(f"{_Q} --eval {{p}}/uint64.npz", 1, "{p}/uint64.npz: labels are class indices and "
          "must be below 2^31, got 18446744073709551615", "labels-uint64-quantize-eval"),
    _case(f"eval {ZOO_MODEL} --data {{p}}/uint64_28.npz", 1, "must be below 2^31, got "
          "18446744073709551615", "labels-uint64-eval-data"),
    _case(f"{_QAT} --data {{p}}/uint64_28.npz", 1, "must be below 2^31", "labels-uint64-qat"),
    _case(f"{_Q} --eval {{p}}/uint32.npz", 1, "must be below 2^31, got 4000000000",
          "labels-uint32"),
    _case(f"{_Q} --eval {{p}}/int64_huge.npz", 1, "must be below 2^31, got 1099511627776",
          "labels-int64-2^40"),
    _case(f"quantize {{i}}/tiny.py:build --calib {{i}}/x12.npy -o {{o}}/{_LONG}.onnx", 2,
          "output {o}/" + _LONG + ".onnx: a path component is 305 bytes long", "long-output"),
    _case(f"{_Q} --save-program {{o}}/{_LONG}.safetensors", 2, "a path component is 312 bytes",
          "long-save-program"),
    _case(f"{_QS} --calib {{o}}/{_LONG}.npy", 1, "cannot use '{o}/" + _LONG + ".npy': File "
          "name too long (a name in a path may have at most 255 bytes", "long-calib"),
    _case(f"{_Q} --weights {{o}}/{_LONG}.safetensors", 1, "File name too long", "long-weights"),
    _case(f"eval {ZOO_MODEL} --data {{o}}/{_LONG}/x.npy", 1, "File name too long", "long-data"),
    _case(f"bench {{o}}/{_LONG}.onnx", 1, "File name too long", "long-bench-model"),
    _case(f"eval {{o}}/{_LONG}.onnx --data {{i}}/x12.npy", 1, "File name too long",
          "long-eval-model"),
    _case(f"qat {_ZOO_W} -o {{o}}/{_LONG}.onnx", 2, "a path component is 305 bytes",
          "long-qat-output"),
    _case(f"train {ZOO_MODEL} -o {{o}}/{_LONG}.safetensors", 2, "a path component is 312 "
          "bytes", "long-train-output"),
    _case(f"train {ZOO_MODEL} --seed 18446744073709551616 -o {{o}}/w.safetensors", 2,
          "argument --seed: must be in 0..18446744073709551615", "train-seed-2^64"),
    _case(f"train {ZOO_MODEL} --seed -1 -o {{o}}/w.safetensors", 2, "argument --seed: must be "
          "in 0..", "train-seed-negative"),
    _case(f"train {ZOO_MODEL} --seed 1e3 -o {{o}}/w.safetensors", 2, "'1e3' is not an integer",
          "train-seed-float"),
    # 3. an input overwritten: shipped zoo weights, symlinks and hard links to inputs
    _case(f"quantize {ZOO_MODEL} --calib {{i}}/x28.npy -o {{o}}/m.onnx --save-program {_W}", 1,
          "output " + _W + " is an input file", "shipped-weights-as-save-program"),
    _case(f"{_Q} --save-program {{w}}/resnet-fmnist.safetensors", 1, "is an input file",
          "other-models-shipped-weights"),
    _case(f"qat {ZOO_MODEL} --data {{i}}/xy28.npz -o {{w}}/{ZOO_MODEL}.onnx", 1,
          "output " + _W + " is an input file", "qat-checkpoint-onto-shipped-weights"),
    _case(f"train resnet-fmnist -o {_W}", 1, "is an input file", "train-onto-other-shipped"),
    _case(f"{_Q} --save-program {{p}}/shipped_link.safetensors", 1,
          "output {p}/shipped_link.safetensors is an input file", "symlink-to-shipped"),
    _case(f"{_Q} --weights {{i}}/tiny.safetensors --save-program {{p}}/hardlink.safetensors",
          1, "output {p}/hardlink.safetensors is an input file", "hard-link-to-weights"),
    # 4. non-finite hyper-parameters
    _case(f"train {ZOO_MODEL} --lr inf -o {{o}}/w.safetensors", 2,
          "argument --lr: must be a finite number, got inf", "train-lr-inf"),
    _case(f"train {ZOO_MODEL} --lr nan -o {{o}}/w.safetensors", 2, "must be a finite number",
          "train-lr-nan"),
    _case(f"train {ZOO_MODEL} --lr 1e400 -o {{o}}/w.safetensors", 2, "must be a finite number, "
          "got 1e400", "train-lr-overflows"),
    _case(f"{_QAT} --lr inf", 2, "argument --lr: must be a finite number", "qat-lr-inf"),
    _case(f"{_QAT} --lr=-inf", 2, "argument --lr: must be a finite number", "qat-lr-minus-inf"),
    # 5. names with control characters, huge headers
    _case(f"{_QS} --calib {{p}}/controls.npz", 1, "it has '\\x1b[31mdata\\nintq: error: fake'",
          "npz-member-name-with-controls"),
    _case(f"{_QS} --calib {{p}}/big_header.npy", 1, "cannot read {p}/big_header.npy: its .npy "
          "header is too large to be a plain array's", "npy-huge-header"),
    _case(f"{_QS} --calib {{p}}/big_header.npz", 1, "its .npy header is too large",
          "npz-huge-header"),
    # 6. decompressed sizes
    _case("quantize {i}/tiny.py:build --input-shape 1,64,64 --calib {p}/bomb.npz -o "
          "{o}/m.onnx --calib-size 2048", 1, "{p}/bomb.npz: array 'x' (the first 2048 rows) "
          "takes 32.0 MiB decompressed, more than the limit of 1.0 MiB; read fewer samples, or "
          "raise INTQ_MAX_ARRAY_BYTES", "bomb-npz-over-the-limit", _ARRAYS),
    _case(f"{_QS} --calib {{p}}/fortran.npz --calib-size 2", 1, "array 'x' takes 2.2 MiB "
          "decompressed", "fortran-npz-is-read-whole", _ARRAYS),
    _case(f"{_QS} --calib {{i}}/x12.npy", 2, "environment variable INTQ_MAX_ARRAY_BYTES='lots'",
          "array-limit-malformed", {"INTQ_MAX_ARRAY_BYTES": "lots"}),
    # 7. non-regular output targets
    _case(f"{_QN} -o {{p}}/fifo.onnx", 1, "output {p}/fifo.onnx is a "
          "named pipe, not a regular file", "output-fifo"),
    _case(f"{_QN} -o {{p}}/null.onnx", 1, "output {p}/null.onnx is a "
          "character device, not a regular file", "output-dev-null"),
    _case(f"{_Q} --save-program {{p}}/null.safetensors", 1, "is a character device",
          "save-program-dev-null"),
    _case(f"qat {_ZOO_W} -o {{p}}/fifo.onnx", 1, "is a named pipe", "qat-output-fifo"),
    _case(f"train {ZOO_MODEL} -o {{p}}/fifo.safetensors", 1, "is a named pipe",
          "train-output-fifo"),
]


@pytest.mark.parametrize("argv, code, message, env", CASES)
def test_probe_input_is_one_line_and_changes_nothing(argv, code, message, env, inputs, probe,
                                                     tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    folders = {"i": inputs, "p": probe, "o": tmp_path, "w": WEIGHTS_DIR}
    before = snapshot(inputs, probe, tmp_path, WEIGHTS_DIR)
    run = run_cli(argv.format(**folders).split(), capsys)
    assert_one_line_error(run, code, message.format(**folders))
    assert snapshot(inputs, probe, tmp_path, WEIGHTS_DIR) == before


def test_file_names_with_control_characters_are_escaped(inputs, tmp_path, capsys):
    """A data path holding a newline and a fake error: one line, the newline escaped."""
    name = tmp_path / "x\nintq: error: all good\x1b[0m.npy"
    run = run_cli(["quantize", f"{inputs}/tiny.py:build", "--input-shape", "1,12,12",
                   "--calib", name, "-o", tmp_path / "m.onnx"], capsys)
    assert_one_line_error(run, 1, "x\\nintq: error: all good\\x1b[0m.npy")
    note = run_cli(["eval", tmp_path / "m\x07.onnx"], capsys)  # a bell
    assert_one_line_error(note, 1, "m\\x07.onnx")


def test_only_the_rows_asked_for_are_decompressed(probe):
    """8 samples of the 64 MiB array in a 64 KiB .npz: about 128 KiB is decompressed and
    allocated, not 64 MiB (tracemalloc counts numpy's buffers)."""
    import tracemalloc

    from intq.zoo.user_data import load_user_data

    assert (probe / "bomb.npz").stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        data = load_user_data(probe / "bomb.npz", input_shape=(1, 64, 64), n=8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data.x.shape == (8, 1, 64, 64) and peak < 4 << 20, peak


def test_the_array_limit_applies_to_what_is_read(probe, monkeypatch):
    """With a 1 MiB limit, 8 rows of the 64 MiB array load; all of it does not."""
    from intq.errors import IntqError
    from intq.zoo.user_data import load_user_data

    monkeypatch.setenv("INTQ_MAX_ARRAY_BYTES", str(1 << 20))
    assert len(load_user_data(probe / "bomb.npz", input_shape=(1, 64, 64), n=8)) == 8
    with pytest.raises(IntqError, match="takes 64.0 MiB decompressed, more than the limit"):
        load_user_data(probe / "bomb.npz", input_shape=(1, 64, 64))


def test_a_character_device_is_never_replaced(inputs, tmp_path, capsys):
    """As root: a real character device node named m.onnx stays a device."""
    if os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    device = tmp_path / "m.onnx"
    os.mknod(device, 0o600 | 0o020000, os.makedev(1, 3))  # S_IFCHR, like /dev/null
    run = run_cli(["quantize", f"{inputs}/tiny.py:build", "--calib", inputs / "x12.npy", "-o",
                   device], capsys)
    assert_one_line_error(run, 1, "is a character device, not a regular file")
    assert device.is_char_device()
