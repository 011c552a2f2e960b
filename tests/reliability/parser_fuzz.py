"""Damaged inputs for the parser fuzz (tests/reliability/test_fuzz_parsers.py, and the long run
in benchmarks/fuzz_exporters.py): valid seed files, random byte edits (flips, cuts, insertions;
header bytes more often), random model spec strings, .npz archives built member by member,
and one check per parser. Damaged ONNX models go through the whole ``intq eval`` /
``intq bench`` command.

Each check returns "accepted" (the parser succeeded and its result is sane) or "refused" (one
IntqError line, or exit 1 with one 'intq: error:' line for the commands; a ValueError for the
IntProgram loader, as it documents) and raises anything else: an AssertionError for an insane
result, or the parser's own stray exception.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import string
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from hypothesis import assume
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save as safetensors_bytes

from intq.cli._common import data_input_shape
from intq.convert.serialize import load_program, save_program
from intq.convert.synthetic import random_cnn
from intq.errors import IntqError
from intq.modelspec import load_model_spec, read_state_dict
from intq.zoo.user_data import load_user_data

__all__ = ["PARSERS"]

EDITS = st.lists(st.tuples(st.sampled_from(["set", "cut", "insert"]),
                           st.one_of(st.integers(0, 160), st.integers(0, 1 << 20)),
                           st.binary(min_size=1, max_size=8)), min_size=1, max_size=4)


def edit(data: bytes, edits) -> bytes:
    """Apply (kind, position, bytes) edits; positions wrap around the current length."""
    data = bytearray(data)
    for kind, position, chunk in edits:
        at = position % (len(data) + 1)
        if kind == "set" and data:
            data[at % len(data)] = chunk[0]
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = chunk
    return bytes(data)


def _bytes_of(save, *args, **kwargs) -> bytes:
    buffer = io.BytesIO()
    save(buffer, *args, **kwargs)
    return buffer.getvalue()


def _damaged(seeds: dict[str, bytes]):
    """(name, seed bytes with random edits)."""
    return st.tuples(st.sampled_from(sorted(seeds)), EDITS).map(
        lambda t: (t[0], edit(seeds[t[0]], t[1])))


# -- .npy / .npz -----------------------------------------------------------------------------

_X = np.random.default_rng(0).standard_normal((3, 1, 4, 4)).astype(np.float32)
ARRAY_FILES = {
    "npy": _bytes_of(np.save, _X),
    "npy-v2": _bytes_of(lambda f, a: np.lib.format.write_array(f, a, version=(2, 0)), _X),
    "npy-fortran": _bytes_of(np.save, np.asfortranarray(_X)),
    "npz": _bytes_of(lambda f: np.savez(f, x=_X, y=np.arange(3))),
    "npz-compressed": _bytes_of(lambda f: np.savez_compressed(f, x=_X, y=np.arange(3))),
}


def check_array_file(folder: Path, kind: str, data: bytes) -> str:
    path = folder / f"data.{kind.split('-')[0]}"
    path.write_bytes(data)
    shape = data_input_shape(str(path))
    assert shape is None or (isinstance(shape, tuple) and len(shape) == 3), shape
    try:
        loaded = load_user_data(path, input_shape=(1, 4, 4), n=2)
    except IntqError as exc:
        assert "\n" not in str(exc), exc
        return "refused"
    assert loaded.x.dtype == torch.float32 and loaded.x.shape[1:] == (1, 4, 4)
    assert torch.isfinite(loaded.x).all() and 1 <= len(loaded) <= 2
    return "accepted"


def check_random_bytes(folder: Path, suffix: str, data: bytes) -> str:
    """Random bytes are never an array file."""
    path = folder / f"data.{suffix}"
    path.write_bytes(data)
    assert data_input_shape(str(path)) is None
    try:
        load_user_data(path, input_shape=(1, 4, 4))
    except IntqError:
        return "refused"
    raise AssertionError(f"random bytes loaded as {suffix}: {data!r}")


# -- images ----------------------------------------------------------------------------------

def _image_bytes(fmt: str, mode: str) -> bytes:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).convert(mode)
    return _bytes_of(image.save, format=fmt)


_FORMATS = (("PNG", "L"), ("PNG", "RGBA"), ("PNG", "P"), ("GIF", "P"), ("BMP", "RGB"),
            ("TIFF", "RGB"), ("JPEG", "RGB"), ("WEBP", "RGB"))
IMAGE_FILES = {f"{fmt.lower()}-{mode}": _image_bytes(fmt, mode) for fmt, mode in _FORMATS}
_SUFFIXES = {"png": "png", "gif": "gif", "bmp": "bmp", "tiff": "tif", "jpeg": "jpg",
             "webp": "webp"}
_PIXEL_LIMIT = 10**6


def check_image(folder: Path, kind: str, data: bytes, shape: tuple[int, int, int]) -> str:
    """A damaged image next to a good one. PIL's decompression-bomb limit is lowered to 10^6
    pixels meanwhile, so that a header claiming a huge size costs no memory here."""
    images = folder / "images"
    images.mkdir(exist_ok=True)
    for old in images.iterdir():
        old.unlink()
    (images / "a.png").write_bytes(IMAGE_FILES["png-L"])
    (images / f"b.{_SUFFIXES[kind.split('-')[0]]}").write_bytes(data)
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, _PIXEL_LIMIT
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's notes on odd files
            loaded = load_user_data(images, input_shape=shape)
    except IntqError as exc:
        assert str(exc).startswith("cannot read image") and "\n" not in str(exc), exc
        return "refused"
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    assert loaded.x.shape == (2, *shape) and torch.isfinite(loaded.x).all()
    return "accepted"


# -- weights and IntProgram files ------------------------------------------------------------

@functools.cache
def weights_files() -> dict[str, bytes]:
    torch.manual_seed(0)
    state = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Linear(3, 2)).state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        save_program(random_cnn(0, weight_bits=4), Path(tmp) / "p.safetensors")
        program = (Path(tmp) / "p.safetensors").read_bytes()
    return {
        "zip.pt": _bytes_of(lambda f: torch.save(state, f)),
        "legacy.pt": _bytes_of(lambda f: torch.save(state, f,
                                                    _use_new_zipfile_serialization=False)),
        "checkpoint.pt": _bytes_of(lambda f: torch.save({"state_dict": state, "epoch": 3}, f)),
        "w.safetensors": safetensors_bytes(state),
        "program.safetensors": program,
    }


def check_weights(folder: Path, name: str, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch: "Detected pickle protocol ..."
            state = read_state_dict(path)
    except IntqError as exc:
        assert "\n" not in str(exc), exc
        return "refused"
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    return "accepted"


def check_program(folder: Path, data: bytes) -> str:
    path = folder / "program.safetensors"
    path.write_bytes(data)
    try:
        load_program(path)
    except ValueError:
        return "refused"
    return "accepted"


# -- model spec strings ----------------------------------------------------------------------

MODEL_PY = """
import torch


def build():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten())


def broken():
    raise ValueError("broken")
"""
_NAME = st.text(string.ascii_letters + string.digits + "_-.", min_size=0, max_size=12)


@st.composite
def _spec(draw) -> tuple[str, str]:
    """(spec template with {folder}, damaged model source). FILE.py:FACTORY with real,
    damaged, missing and non-Python files; package.module:FACTORY with modules that cannot be
    imported; or any short text."""
    source = edit(MODEL_PY.encode(), draw(EDITS)).decode("utf-8", "replace")
    kind = draw(st.sampled_from(["file", "module", "text"]))
    if kind == "file":
        stem = draw(st.sampled_from(["model", "damaged", "missing", "notes"]))
        suffix = draw(st.sampled_from([".py", ".txt", ""]))
        sep = draw(st.sampled_from([":", "::", "", ":/"]))
        factory = draw(st.one_of(st.sampled_from(["build", "broken", "nope"]), _NAME))
        return f"{{folder}}/{stem}{suffix}{sep}{factory}", source
    spec = f"{draw(_NAME)}:{draw(_NAME)}" if kind == "module" else draw(
        st.text(string.printable, max_size=30))
    module = spec.rpartition(":")[0]
    top = module.split(".")[0]
    # never import a module that exists: random names like 'this' or 'antigravity' act
    assume("/" in module or not top.isidentifier() or importlib.util.find_spec(top) is None)
    return spec.replace("{", "{{").replace("}", "}}"), source


def check_spec(folder: Path, template: str, source: str) -> str:
    (folder / "model.py").write_text(MODEL_PY)
    (folder / "notes.txt").write_text("not python\n")
    (folder / "damaged.py").write_text(source)
    try:
        loaded = load_model_spec(template.format(folder=folder))
    except IntqError as exc:
        assert "\n" not in str(exc), exc
        return "refused"
    assert isinstance(loaded.model, torch.nn.Module)
    return "accepted"


# -- ONNX models given to intq eval / intq bench ---------------------------------------------

@functools.cache
def onnx_files() -> dict[str, bytes]:
    """An intq-exported integer CNN (dynamic batch) and a float classifier (fixed batch)."""
    from intq.export import export_onnx

    from .hostile_onnx import classifier

    with tempfile.TemporaryDirectory() as tmp:
        float_model = classifier(Path(tmp) / "c.onnx", 2).read_bytes()
    program = random_cnn(0, batch=None, size=8, float_logits=True)
    return {"int8": export_onnx(program).SerializeToString(), "float": float_model}


_ONNX_DATA = {"int8": (3, 8, 8), "float": (1, 12, 12)}


def check_onnx_cli(folder: Path, kind: str, data: bytes, command: str) -> str:
    """``intq eval`` / ``intq bench`` on a damaged model, in this process with a 5 s budget
    per run: exit 0 with a report, or exit 1 with exactly one 'intq: error:' line."""
    import contextlib
    import os

    from intq.cli import main

    path = folder / "model.onnx"
    path.write_bytes(data)
    x = np.random.default_rng(0).standard_normal((3, *_ONNX_DATA[kind])).astype(np.float32)
    np.save(folder / "x.npy", x)
    argv = ["eval", str(path), "--data", str(folder / "x.npy")] if command == "eval" else [
        "bench", str(path), "--repeats", "1", "--warmup", "0"]
    out, err = io.StringIO(), io.StringIO()
    previous = os.environ.get("INTQ_ORT_SECONDS")
    os.environ["INTQ_ORT_SECONDS"] = "5"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        if previous is None:
            del os.environ["INTQ_ORT_SECONDS"]
        else:
            os.environ["INTQ_ORT_SECONDS"] = previous
    lines = err.getvalue().splitlines()
    if code == 0:
        assert out.getvalue() and all(ln.startswith("intq: ") for ln in lines), lines
        return "accepted"
    assert code == 1 and out.getvalue() == "", (code, out.getvalue(), lines)
    assert len(lines) >= 1 and lines[-1].startswith("intq: error: "), lines
    assert all(ln.startswith("intq: ") and not ln.startswith("intq: error: ")
               for ln in lines[:-1]), lines
    return "refused"


# -- .npz archives built member by member ----------------------------------------------------

_DTYPES = ["<f4", ">f4", "<f8", "<i8", "<u8", "|u1", "|b1", "<c8", "<f2", "|V4", "|O"]
_MEMBER = st.tuples(
    st.sampled_from(["x", "y", "z", "x.npy", "y\n", "d/x.npy"]),
    st.sampled_from(_DTYPES),
    st.one_of(st.just(()), st.tuples(st.integers(0, 5)),
              st.tuples(st.integers(0, 5), st.integers(1, 2), st.integers(3, 5),
                        st.integers(3, 5))),
    st.integers(-64, 64),  # bytes of data beyond (+) or short of (-) what the header claims
    st.booleans(),  # compressed
    st.sampled_from([(1, 0), (2, 0), (3, 0), (9, 9)]),  # .npy format version
)
_GOOD_X = st.tuples(st.just("x"), st.just("<f4"),
                   st.tuples(st.integers(1, 5), st.just(1), st.just(4), st.just(4)),
                   st.integers(0, 64), st.booleans(), st.sampled_from([(1, 0), (2, 0)]))
NPZ_ARCHIVES = st.tuples(st.tuples(st.lists(_GOOD_X, max_size=1),
                                   st.lists(_MEMBER, max_size=3)).map(lambda t: t[0] + t[1]),
                         st.one_of(st.none(), st.integers(1, 4)),  # n
                         st.sampled_from([None, 256, 1 << 20]))  # INTQ_MAX_ARRAY_BYTES


def _member_bytes(dtype: str, shape: tuple, extra: int, version: tuple[int, int]) -> bytes:
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    size = 2 if version == (1, 0) else 4
    header += b" " * (-(len(header) + 8 + size + 1) % 64) + b"\n"
    count = int(np.prod(shape))
    if dtype in ("|V4", "|O"):  # raw bytes; never unpickled
        payload = bytes(range(256)) * (count * 8 // 256 + 1)
    else:
        payload = (np.arange(count) % 7).astype(dtype).tobytes()
    payload = (payload + bytes(max(0, extra)))[: max(0, len(payload) + extra)]
    return (b"\x93NUMPY" + bytes(version) + len(header).to_bytes(size, "little") + header
            + payload)


def check_npz_archive(folder: Path, members: list, n: int | None, limit: int | None) -> str:
    """An archive of members with any names, dtypes (pickled objects included), shapes,
    compression, format versions and too much or too little data; read with and without
    ``n`` and a size limit: a sane result or one IntqError line."""
    import os
    import zipfile

    path = folder / "data.npz"
    with zipfile.ZipFile(path, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile: "Duplicate name"
        for name, dtype, shape, extra, compressed, version in members:
            member = name if name.endswith(".npy") else f"{name}.npy"
            archive.writestr(member, _member_bytes(dtype, shape, extra, version),
                             zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED)
    previous = os.environ.pop("INTQ_MAX_ARRAY_BYTES", None)
    if limit is not None:
        os.environ["INTQ_MAX_ARRAY_BYTES"] = str(limit)
    try:
        shape = data_input_shape(str(path))
        assert shape is None or len(shape) == 3, shape
        try:
            loaded = load_user_data(path, input_shape=(1, 4, 4), n=n)
        except IntqError as exc:
            assert "\n" not in str(exc), exc
            return "refused"
    finally:
        os.environ.pop("INTQ_MAX_ARRAY_BYTES", None)
        if previous is not None:
            os.environ["INTQ_MAX_ARRAY_BYTES"] = previous
    assert loaded.x.dtype == torch.float32 and loaded.x.shape[1:] == (1, 4, 4)
    assert torch.isfinite(loaded.x).all() and 1 <= len(loaded) <= (n or 5)
    assert loaded.y is None or (loaded.y.shape == (len(loaded),) and (loaded.y >= 0).all())
    return "accepted"


def _shape():
    return st.sampled_from([(1, 6, 6), (3, 5, 7)])


# name -> (strategy of argument tuples, check(folder, *arguments))
PARSERS = {
    "npy/npz files": (_damaged(ARRAY_FILES), check_array_file),
    "random bytes as .npy/.npz": (st.tuples(st.sampled_from(["npy", "npz"]),
                                            st.binary(max_size=300)), check_random_bytes),
    "image files": (st.tuples(_damaged(IMAGE_FILES), _shape()).map(lambda t: (*t[0], t[1])),
                    check_image),
    "weights files": (st.deferred(lambda: _damaged({k: v for k, v in weights_files().items()
                                                    if k != "program.safetensors"})),
                      check_weights),
    "IntProgram files": (st.deferred(lambda: _damaged(
        {"program": weights_files()["program.safetensors"]}).map(lambda t: (t[1],))),
        check_program),
    "model spec strings": (_spec(), check_spec),
    "ONNX models (eval, bench)": (st.deferred(lambda: st.tuples(
        _damaged(onnx_files()), st.sampled_from(["eval", "bench"])).map(
            lambda t: (*t[0], t[1]))), check_onnx_cli),
    ".npz archives (members)": (NPZ_ARCHIVES, check_npz_archive),
}
