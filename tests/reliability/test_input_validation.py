"""Every input a user hands intq, malformed: model specs, weights, data files and folders,
recipes and flag combinations, output paths. Each case: exit code 2 (usage) or 1 (failure),
one 'intq: error:' line naming the input, no traceback, no file written, inputs unchanged."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from intq.errors import IntqError
from intq.zoo.user_data import load_user_data

from .conftest import ZOO_MODEL, assert_one_line_error, run_cli, snapshot

INTQ = Path(sys.executable).with_name("intq")


def _images(folder: Path, count: int, size=(20, 20), mode: str = "L", seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], len(mode))
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
            folder / f"{i}.png")


def _npy_with_header(path: Path, shape: tuple) -> None:
    """A .npy whose header claims ``shape`` float32 but holds 64 bytes of data."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header +
                     bytes(64))


@pytest.fixture(scope="module")
def bad(tmp_path_factory, inputs) -> Path:
    """Malformed inputs, one file or folder each."""
    b = tmp_path_factory.mktemp("bad")
    (b / "syntax.py").write_text("def build(:\n")
    (b / "exits_on_import.py").write_text("import sys\nsys.exit(3)\n")
    (b / "notes.txt").write_text("hello\n")
    torch.save(torch.nn.Linear(2, 2), b / "module.pt")
    (b / "corrupt.safetensors").write_bytes(b"\x10" + bytes(7) + b"{not json")
    (b / "truncated.safetensors").write_bytes((inputs / "v1.safetensors").read_bytes()[:1000])
    nan = load_file(inputs / "tiny.safetensors")
    nan["0.weight"][0, 0, 0, 0] = float("nan")
    save_file(nan, b / "nan_weights.safetensors")
    x = np.random.default_rng(1).standard_normal((4, 1, 12, 12)).astype(np.float32)
    arrays = {"nan": np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x),
              "inf": np.full_like(x, np.inf), "huge": np.full_like(x, 3e38),
              "float64": x.astype(np.float64), "int8": x.astype(np.int8), "rank3": x[0],
              "rank5": x[None], "scalar": np.float32(1), "empty": x[:0], "rgb": np.repeat(x, 3, 1)}
    for name, value in arrays.items():
        np.save(b / f"{name}.npy", value)
    np.savez(b / "no_x.npz", data=x)
    np.savez(b / "float_labels.npz", x=x, y=np.array([0.5, 1, 2, 3]))
    np.savez(b / "negative_labels.npz", x=x, y=np.array([-1, 1, 2, 3]))
    np.savez(b / "short_labels.npz", x=x, y=np.array([1, 2, 3]))
    np.savez(b / "big_labels.npz", x=x, y=np.array([0, 1, 2, 40]))
    np.savez(b / "big_labels28.npz", x=np.zeros((64, 1, 28, 28), np.float32),
             y=np.r_[np.zeros(63, int), 40])
    np.savez(b / "unlabelled28.npz", x=np.zeros((64, 1, 28, 28), np.float32))
    (b / "truncated.npy").write_bytes((b / "nan.npy").read_bytes()[:100])
    (b / "zero_bytes.npy").write_bytes(b"")
    (b / "not_a_zip.npz").write_bytes(b"PK\x03\x04" + bytes(60))
    _npy_with_header(b / "huge_header.npy", (10**13, 1, 12, 12))
    (b / "empty_folder").mkdir()
    (b / "no_images").mkdir()
    (b / "no_images" / "readme.txt").write_text("no pictures here\n")
    (b / "empty_classes" / "cat").mkdir(parents=True)
    (b / "empty_classes" / "dog").mkdir()
    _images(b / "corrupt_image", 2)
    (b / "corrupt_image" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    _images(b / "truncated_image", 1, (64, 64), "RGB")
    png = (b / "truncated_image" / "0.png").read_bytes()
    (b / "truncated_image" / "1.png").write_bytes(png[: len(png) // 2])
    _images(b / "top_and_classes", 1)
    _images(b / "top_and_classes" / "cat", 1)
    _images(b / "images", 3)
    (b / "dir.onnx").mkdir()
    (b / "dir.safetensors").mkdir()
    os.symlink(inputs / "tiny.safetensors", b / "link.safetensors")
    return b


def _case(argv: str, code: int, message: str, case_id: str):
    return pytest.param(argv, code, message, id=case_id)


_Q = "quantize {i}/tiny.py:build --calib {i}/x12.npy -o {o}/m.onnx"
_QD = "quantize {i}/tiny.py:build --input-shape 1,12,12 -o {o}/m.onnx --calib"
_ZOO = f"quantize {ZOO_MODEL} --calib {{i}}/x28.npy -o {{o}}/m.onnx"
_QAT = f"qat {ZOO_MODEL} --weights {{i}}/v1.safetensors --n 64 --steps 2 --batch-size 16"
_ZOO_W = f"{ZOO_MODEL} --weights {{i}}/v1.safetensors"

CASES = [
    # model specs
    _case("quantize {b}/missing.py:build --calib {i}/x12.npy -o {o}/m.onnx", 1,
          "model file {b}/missing.py does not exist", "spec-missing-file"),
    _case("quantize {b}/syntax.py:build --calib {i}/x12.npy -o {o}/m.onnx", 1,
          "model file {b}/syntax.py failed to load: SyntaxError", "spec-syntax-error"),
    _case("quantize {i}/tiny.py:nope --calib {i}/x12.npy -o {o}/m.onnx", 1,
          "{i}/tiny.py has no factory 'nope'", "spec-factory-missing"),
    _case("quantize {i}/tiny.py:broken --calib {i}/x12.npy -o {o}/m.onnx", 1,
          "model factory {i}/tiny.py:broken raised RuntimeError: no GPU here",
          "spec-factory-raises"),
    _case("quantize {i}/tiny.py:not_a_model --calib {i}/x12.npy -o {o}/m.onnx", 1,
          "returned str, not a torch.nn.Module", "spec-not-a-module"),
    _case("quantize {i}/tiny.py:exits --calib {i}/x12.npy -o {o}/m.onnx", 1,
          "model factory {i}/tiny.py:exits raised SystemExit: 0", "spec-factory-sys-exit"),
    _case("quantize {b}/exits_on_import.py:build --calib {i}/x12.npy -o {o}/m.onnx", 1,
          "failed to load: SystemExit: 3", "spec-sys-exit-on-import"),
    _case("quantize sys:exit --calib {i}/x12.npy -o {o}/m.onnx", 1,
          "model factory sys:exit raised SystemExit", "spec-module-sys-exit"),
    _case("quantize {i}/x12.npy:build --calib {i}/x12.npy -o {o}/m.onnx", 1,
          "is not a Python file (.py)", "spec-not-python"),
    _case("quantize {i}/tiny.py: --calib {i}/x12.npy -o {o}/m.onnx", 1,
          "unknown model '{i}/tiny.py:'", "spec-no-factory-name"),
    _case("quantize intq_no_such_module:build --calib {i}/x12.npy -o {o}/m.onnx", 1,
          "cannot import model module 'intq_no_such_module'", "spec-unknown-module"),
    _case("quantize {i}/tiny.py:identity --calib {i}/x12.npy -o {o}/m.onnx", 1,
          "must return (batch, classes) logits, got (2, 1, 12, 12)", "spec-wrong-output"),
    _case("quantize {i}/tiny.py:build --calib {b}/rgb.npy -o {o}/m.onnx", 1,
          "fails on file:{b}/rgb.npy inputs of shape (2, 3, 12, 12)", "spec-wrong-input-channels"),
    _case("eval no-such-model", 1, "unknown model 'no-such-model'", "eval-unknown-zoo-model"),
    # weights
    _case(f"{_Q} --weights {{b}}/missing.safetensors", 1,
          "weights file {b}/missing.safetensors does not exist", "weights-missing"),
    _case(f"{_Q} --weights {{i}}/v1.safetensors", 1,
          "does not fit the model (a different architecture?)", "weights-other-architecture"),
    _case(f"{_Q} --weights {{b}}/corrupt.safetensors", 1, "is not a valid safetensors file",
          "weights-corrupt-safetensors"),
    _case(f"{_Q} --weights {{b}}/truncated.safetensors", 1, "is not a valid safetensors file",
          "weights-truncated-safetensors"),
    _case(f"eval {ZOO_MODEL} --weights {{b}}/truncated.safetensors", 1,
          "is not a valid safetensors file", "eval-weights-truncated"),
    _case(f"qat {ZOO_MODEL} --weights {{b}}/corrupt.safetensors --data {{i}}/xy28.npz "
          "-o {o}/q.onnx", 1,
          "is not a valid safetensors file", "qat-weights-corrupt"),
    _case(f"{_Q} --weights {{b}}/module.pt", 1,
          "refusing to unpickle {b}/module.pt: it needs code (torch.nn.modules.linear.Linear)",
          "weights-pickled-module"),
    _case(f"{_Q} --weights {{b}}/nan_weights.safetensors", 1,
          "calibration failed: minmax observer: calibration tensor contains 1 NaN values",
          "weights-nan"),
    # data files
    _case(f"{_QD} {{b}}/missing.npy", 1, "unknown data '{b}/missing.npy'", "data-missing"),
    _case(f"{_QD} {{b}}/notes.txt", 1, "unsupported data file", "data-unsupported-file"),
    _case(f"{_QD} {{b}}/nan.npy", 1, "1 samples hold NaN or Inf values (first: sample 0)",
          "data-nan"),
    _case(f"{_QD} {{b}}/inf.npy", 1, "4 samples hold NaN or Inf values", "data-inf"),
    _case(f"{_QD} {{b}}/huge.npy", 1, "calibration failed: mse observer: calibration "
          "tensor contains", "data-finite-but-overflowing"),
    _case(f"{_QD} {{b}}/float64.npy", 1, "expected inputs float32 of shape (N, 1, 12, 12), got "
          "float64", "data-float64"),
    _case(f"{_QD} {{b}}/int8.npy", 1, "got int8 of shape (4, 1, 12, 12)", "data-int8"),
    _case(f"{_QD} {{b}}/rank3.npy", 1, "got float32 of shape (1, 12, 12)", "data-rank3"),
    _case(f"{_QD} {{b}}/rank5.npy", 1, "got float32 of shape (1, 4, 1, 12, 12)", "data-rank5"),
    _case(f"{_QD} {{b}}/scalar.npy", 1, "got float32 of shape ()", "data-0d"),
    _case(f"{_QD} {{b}}/empty.npy", 1, "holds no samples (shape (0, 1, 12, 12))", "data-empty"),
    _case(f"{_ZOO} --weights {{i}}/v1.safetensors --eval {{i}}/x12.npy", 1,
          "expected inputs float32 of shape (N, 1, 28, 28)", "data-wrong-size"),
    _case(f"{_QD} {{b}}/no_x.npz", 1, "a .npz needs an array 'x' (and optionally 'y'); it "
          "has 'data'", "data-npz-without-x"),
    _case(f"{_Q} --eval {{b}}/float_labels.npz", 1, "expected labels 'y' as integers",
          "data-float-labels"),
    _case(f"{_Q} --eval {{b}}/negative_labels.npz", 1, "labels must be >= 0, got -1",
          "data-negative-labels"),
    _case(f"{_Q} --eval {{b}}/short_labels.npz", 1, "of shape (4,), got int64 of shape (3,)",
          "data-short-labels"),
    _case(f"{_Q} --eval {{b}}/big_labels.npz", 1,
          "labels up to 40 but the model has only 10 classes", "data-labels-beyond-classes"),
    _case(f"{_QD} {{b}}/truncated.npy", 1, "cannot read {b}/truncated.npy", "data-truncated-npy"),
    _case(f"{_QD} {{b}}/zero_bytes.npy", 1, "cannot read {b}/zero_bytes.npy",
          "data-zero-byte-npy"),
    _case(f"{_QD} {{b}}/not_a_zip.npz", 1, "cannot read {b}/not_a_zip.npz: BadZipFile",
          "data-corrupt-npz"),
    _case(f"{_QD} {{b}}/huge_header.npy", 1, "{b}/huge_header.npy: array 'x' takes "
          "5364418.0 GiB decompressed, more than the limit", "data-header-claims-5PiB"),
    # data folders
    _case(f"{_QD} {{b}}/empty_folder", 1, "no images found", "folder-empty"),
    _case(f"{_QD} {{b}}/no_images", 1, "no images found", "folder-no-images"),
    _case(f"{_QD} {{b}}/empty_classes", 1, "no images found", "folder-empty-classes"),
    _case(f"{_QD} {{b}}/corrupt_image", 1, "cannot read image {b}/corrupt_image/2.png",
          "folder-corrupt-image"),
    _case(f"{_QD} {{b}}/truncated_image", 1, "cannot read image {b}/truncated_image/1.png: "
          "image file is truncated", "folder-truncated-image"),
    _case(f"{_QD} {{b}}/top_and_classes", 1, "has images both at the top and in class "
          "sub-folders", "folder-images-and-classes"),
    _case("quantize {i}/tiny.py:build --input-shape 2,12,12 -o {o}/m.onnx --calib {b}/images",
          1, "images can only feed models with 1 or 3 input channels, not 2",
          "folder-two-channel-model"),
    # recipes and flag combinations
    _case(f"{_Q} --recipe sym-8", 2, "--recipe: unknown recipe 'sym-8'", "flags-unknown-recipe"),
    _case(f"{_Q} --w-bits 1", 2, "argument --w-bits: must be in 2..8, got 1", "flags-w-bits-1"),
    _case(f"{_Q} --a-bits 16", 2, "argument --a-bits: must be in 2..8, got 16",
          "flags-a-bits-16"),
    _case(f"{_Q} --per-tensor --per-channel", 2, "not allowed with argument --per-tensor",
          "flags-per-tensor-and-per-channel"),
    _case(f"{_Q} --weight-only", 2, "-o: weight-only quantization has no integer ONNX form",
          "flags-weight-only-with-output"),
    _case("quantize {i}/tiny.py:build --calib {i}/x12.npy --keep-float nope", 1,
          "--keep-float nope: no module of the model has this name", "flags-keep-float-unknown"),
    _case(f"{_Q} --recipe asym-per-channel-8", 2, "-o: asymmetric per-channel weights have no "
          "integer ONNX form", "flags-asym-per-channel-with-output"),
    _case(f"{_Q} --input-shape 1,0,12", 2, "expected C,H,W with sizes >= 1, got '1,0,12'",
          "flags-input-shape-zero"),
    _case(f"{_Q} --input-shape 1,12", 2, "expected C,H,W with sizes >= 1", "flags-input-shape-2d"),
    _case(f"{_ZOO} --input-shape 3,28,28", 2, "takes inputs of shape 1x28x28",
          "flags-input-shape-vs-zoo"),
    _case("quantize {i}/tiny.py:build -o {o}/m.onnx", 2, "give --input-shape C,H,W",
          "flags-no-input-shape"),
    _case(f"{_Q} --calib-size 0", 2, "argument --calib-size: must be >= 1, got 0",
          "flags-calib-size-0"),
    _case(f"{_Q} --repeats 0", 2, "argument --repeats: must be >= 1", "flags-repeats-0"),
    _case(f"{_Q} --seed -5", 2, "argument --seed: must be in 0..18446744073709551615, got -5",
          "flags-negative-seed"),
    _case(f"{_Q} --seed 100000000000000000000000", 2, "argument --seed: must be in 0..",
          "flags-huge-seed"),
    _case(f"{_Q} --frobnicate", 2, "unrecognized arguments: --frobnicate", "flags-unknown-flag"),
    _case("transmogrify", 2, "argument COMMAND: invalid choice: 'transmogrify'",
          "flags-unknown-command"),
    _case(f"{_QAT} --w-bits 16 -o {{o}}/q.onnx", 2, "16-bit weights / 8-bit activations have "
          "no ONNX form", "qat-w-bits-16"),
    _case(f"{_QAT} --w-bits 1 -o {{o}}/q.onnx", 2, "bits must be an integer in 2..16, got 1",
          "qat-w-bits-1"),
    _case(f"{_QAT} --holdout 64 -o {{o}}/q.onnx", 2, "--holdout 64 leaves no training data",
          "qat-holdout-everything"),
    _case(f"{_QAT} --lr nan -o {{o}}/q.onnx", 2, "argument --lr: must be a finite number, got nan",
          "qat-lr-nan"),
    _case(f"{_QAT} --lr 1e30 -o {{o}}/q.onnx", 1, "QAT failed: ", "qat-diverges"),
    _case(f"{_QAT} --seed -1 -o {{o}}/q.onnx", 2, "argument --seed: must be in 0..",
          "qat-negative-seed"),
    _case(f"qat {_ZOO_W} --data {{b}}/big_labels28.npz -o {{o}}/q.onnx", 1,
          "has labels up to 40 but the model has only 10 classes", "qat-labels-beyond-classes"),
    _case(f"eval {ZOO_MODEL} --reference {{i}}/tiny.py:build", 2,
          "--reference compares an ONNX model with a float model", "eval-reference-without-onnx"),
    _case("bench {b}/missing.onnx --threads 0", 2, "argument --threads: must be >= 1",
          "bench-threads-0"),
    _case("bench {b}/missing.onnx", 1, "ONNX model {b}/missing.onnx does not exist",
          "bench-missing-file"),
    _case("bench {b}/missing.onnx --seed -1", 2, "argument --seed: must be in 0..",
          "bench-negative-seed"),
    # output paths
    _case("quantize {i}/tiny.py:build --calib {i}/x12.npy -o {o}/missing/m.onnx", 1,
          "output directory {o}/missing does not exist; create it first", "output-missing-dir"),
    _case("quantize {i}/tiny.py:build --calib {i}/x12.npy -o {b}/dir.onnx", 1,
          "output {b}/dir.onnx is a directory; give a file name", "output-is-a-directory"),
    _case("quantize {i}/tiny.py:build --calib {i}/x12.npy -o {o}/m.txt", 2,
          "the file name must end in .onnx", "output-wrong-suffix"),
    _case(f"{_Q} --weights {{i}}/tiny.safetensors --save-program {{i}}/tiny.safetensors", 1,
          "output {i}/tiny.safetensors is an input file", "output-is-the-weights"),
    _case(f"{_Q} --weights {{i}}/tiny.safetensors --save-program {{b}}/link.safetensors", 1,
          "output {b}/link.safetensors is an input file", "output-symlink-to-input"),
    _case("quantize {i}/tiny.py:build --calib {i}/x12.npy -o /proc/intq-reliability.onnx", 1,
          "output directory /proc is not writable", "output-unwritable-dir"),
    _case(f"{_Q} --save-program /proc/intq-reliability.safetensors", 1,
          "output directory /proc is not writable", "output-unwritable-program-dir"),
    _case(f"qat {_ZOO_W} -o {{i}}/v1.onnx", 1, "output {i}/v1.safetensors is an input file",
          "qat-checkpoint-would-overwrite-weights"),
    _case(f"qat {_ZOO_W} -o {{o}}/missing/q.onnx", 1, "output directory {o}/missing does not "
          "exist", "qat-output-missing-dir"),
    _case(f"qat {_ZOO_W} -o {{b}}/dir.onnx", 1, "output {b}/dir.onnx is a directory",
          "qat-output-is-a-directory"),
    _case(f"qat {_ZOO_W} -o /proc/intq-reliability.onnx", 1, "output directory /proc is not "
          "writable", "qat-output-unwritable-dir"),
    _case(f"train {ZOO_MODEL} -o {{o}}/missing/w.safetensors", 1, "output directory "
          "{o}/missing does not exist", "train-output-missing-dir"),
    _case(f"train {ZOO_MODEL} -o {{b}}/dir.safetensors", 1, "output {b}/dir.safetensors is a "
          "directory", "train-output-is-a-directory"),
    _case(f"train {ZOO_MODEL} -o /proc/intq-reliability.safetensors", 1, "output directory "
          "/proc is not writable", "train-output-unwritable-dir"),
]


@pytest.mark.parametrize("argv, code, message", CASES)
def test_bad_input_is_one_line_and_changes_nothing(argv, code, message, inputs, bad, tmp_path,
                                                   capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default output name would land here
    folders = {"i": inputs, "b": bad, "o": tmp_path}
    before = snapshot(inputs, bad, tmp_path)
    run = run_cli(argv.format(**folders).split(), capsys)
    assert_one_line_error(run, code, message.format(**folders))
    assert snapshot(inputs, bad, tmp_path) == before


def test_debug_shows_the_traceback(inputs, bad, capsys):
    with pytest.raises(IntqError, match="weights file .* does not exist"):
        run_cli(["--debug", "quantize", f"{inputs}/tiny.py:build", "--calib",
                 inputs / "x12.npy", "--weights", bad / "missing.safetensors"], capsys)


def test_console_script_exit_codes(inputs, tmp_path):
    """The real executable: usage error -> 2, failure -> 1, one line each, no traceback."""
    for argv, code in ((["quantize", "--w-bits", "1"], 2),
                       (["quantize", f"{inputs}/tiny.py:broken", "--calib",
                         str(inputs / "x12.npy")], 1)):
        result = subprocess.run([str(INTQ), *argv], capture_output=True, text=True,
                                timeout=120, cwd=tmp_path)
        assert result.returncode == code and result.stdout == "", result
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("intq: error: ")
    assert list(tmp_path.iterdir()) == []


def test_unprivileged_user_gets_one_line_errors(inputs):
    """Permissions only bite a non-root user: as root, run the real executable as 'nobody'.
    A read-only output folder and an unreadable image folder are one-line errors."""
    as_user = _unprivileged_prefix()
    base = Path(tempfile.mkdtemp(prefix="intq-perm-"))  # pytest's tmp is private to root
    base.chmod(0o777)
    readonly, images = base / "readonly", base / "images"
    readonly.mkdir(mode=0o555)
    _images(images / "cat", 2)
    shutil.copy(inputs / "tiny.py", base / "tiny.py")
    np.save(base / "x.npy", np.zeros((4, 1, 12, 12), np.float32))
    for path in (base / "tiny.py", base / "x.npy"):
        path.chmod(0o644)
    (images / "cat").chmod(0o000)
    images.chmod(0o755)
    cases = [
        (["quantize", f"{base}/tiny.py:build", "--calib", f"{base}/x.npy", "-o",
          f"{readonly}/m.onnx"], f"output directory {readonly} is not writable (Permission "
         "denied)"),
        (["quantize", f"{base}/tiny.py:build", "--input-shape", "1,12,12", "--calib",
          str(images), "-o", f"{base}/m.onnx"], f"cannot list {images}/cat: Permission denied"),
    ]
    try:
        for argv, message in cases:
            result = subprocess.run([*as_user, str(INTQ), *argv], capture_output=True,
                                    text=True, timeout=120, cwd=base)
            assert result.returncode == 1, result
            assert result.stderr.startswith(f"intq: error: {message}"), result
            assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert sorted(p.name for p in base.iterdir()) == ["images", "readonly", "tiny.py",
                                                            "x.npy"]
        assert list(readonly.iterdir()) == []
    finally:
        (images / "cat").chmod(0o755)
        shutil.rmtree(base)


def _unprivileged_prefix() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop privileges")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_mixed_images_are_converted_not_refused(tmp_path):
    """Accepted, with a defined result: grayscale, RGB, RGBA, 16-bit, palette and 1-bit images
    of different sizes become the model's channels (L or RGB) at its size, center cropped."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (50, 10, 3), dtype=np.uint8)).save(folder / "b.jpg")
    Image.fromarray(rng.integers(0, 256, (5, 5, 4), dtype=np.uint8)).save(folder / "c.png")
    Image.fromarray(rng.integers(0, 65535, (8, 8), dtype=np.uint16)).save(folder / "d.png")
    Image.new("P", (9, 9)).save(folder / "e.gif")
    Image.new("1", (9, 7)).save(folder / "f.bmp")
    for shape in ((1, 12, 12), (3, 16, 8)):
        data = load_user_data(folder, input_shape=shape)
        assert data.x.shape == (6, *shape) and data.y is None
        assert torch.isfinite(data.x).all()
    with pytest.raises(IntqError, match="images can only feed models with 1 or 3 input"):
        load_user_data(folder, input_shape=(4, 8, 8))
