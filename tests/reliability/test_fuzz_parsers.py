"""Fuzz of the input parsers: valid .npy/.npz, image, weights and IntProgram files with random
byte edits (flips, cuts, insertions; header bytes more often), random bytes, and random model
spec strings. Every outcome is a success with a sane result or one IntqError (ValueError for
the IntProgram loader, as documented); never another exception."""

import importlib.util
import io
import string
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from intq.cli._common import data_input_shape
from intq.convert.serialize import load_program, save_program
from intq.convert.synthetic import random_cnn
from intq.errors import IntqError
from intq.modelspec import load_model_spec, read_state_dict
from intq.zoo.user_data import load_user_data

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

_EDITS = st.lists(st.tuples(st.sampled_from(["set", "cut", "insert"]),
                            st.one_of(st.integers(0, 160), st.integers(0, 1 << 20)),
                            st.binary(min_size=1, max_size=8)), min_size=1, max_size=4)


def _edit(data: bytes, edits) -> bytes:
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


_X = np.random.default_rng(0).standard_normal((3, 1, 4, 4)).astype(np.float32)
ARRAY_FILES = {
    "npy": _bytes_of(np.save, _X),
    "npy-v2": _bytes_of(lambda f, a: np.lib.format.write_array(f, a, version=(2, 0)), _X),
    "npy-fortran": _bytes_of(np.save, np.asfortranarray(_X)),
    "npz": _bytes_of(lambda f: np.savez(f, x=_X, y=np.arange(3))),
    "npz-compressed": _bytes_of(lambda f: np.savez_compressed(f, x=_X, y=np.arange(3))),
}


@FUZZ
@given(st.sampled_from(sorted(ARRAY_FILES)), _EDITS)
def test_damaged_array_files(tmp_path, kind, edits):
    path = tmp_path / f"data.{kind.split('-')[0]}"
    path.write_bytes(_edit(ARRAY_FILES[kind], edits))
    shape = data_input_shape(str(path))
    assert shape is None or (isinstance(shape, tuple) and len(shape) == 3)
    try:
        data = load_user_data(path, input_shape=(1, 4, 4), n=2)
    except IntqError as exc:
        assert "\n" not in str(exc)
        return
    assert data.x.dtype == torch.float32 and data.x.shape[1:] == (1, 4, 4)
    assert torch.isfinite(data.x).all() and 1 <= len(data) <= 2


@FUZZ
@given(st.sampled_from(["npy", "npz"]), st.binary(max_size=300))
def test_random_bytes_as_array_files(tmp_path, suffix, data):
    path = tmp_path / f"data.{suffix}"
    path.write_bytes(data)
    assert data_input_shape(str(path)) is None
    with pytest.raises(IntqError):
        load_user_data(path, input_shape=(1, 4, 4))


def _image_bytes(fmt: str, mode: str) -> bytes:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).convert(mode)
    return _bytes_of(image.save, format=fmt)


IMAGE_FILES = {f"{fmt.lower()}-{mode}": (fmt, _image_bytes(fmt, mode)) for fmt, mode in (
    ("PNG", "L"), ("PNG", "RGBA"), ("PNG", "P"), ("GIF", "P"), ("BMP", "RGB"),
    ("TIFF", "RGB"), ("JPEG", "RGB"), ("WEBP", "RGB"))}
_SUFFIX = {"PNG": "png", "GIF": "gif", "BMP": "bmp", "TIFF": "tif", "JPEG": "jpg",
           "WEBP": "webp"}


@FUZZ
@given(st.sampled_from(sorted(IMAGE_FILES)), _EDITS, st.sampled_from([(1, 6, 6), (3, 5, 7)]))
def test_damaged_images(tmp_path, monkeypatch, kind, edits, shape):
    """A damaged image among good ones. PIL's decompression-bomb limit is lowered to 10^6
    pixels so that a header claiming a huge size costs no memory here."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10**6)
    fmt, data = IMAGE_FILES[kind]
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    (folder / "a.png").write_bytes(IMAGE_FILES["png-L"][1])
    (folder / f"b.{_SUFFIX[fmt]}").write_bytes(_edit(data, edits))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's notes on odd files
            loaded = load_user_data(folder, input_shape=shape)
    except IntqError as exc:
        assert str(exc).startswith("cannot read image") and "\n" not in str(exc)
        return
    assert loaded.x.shape == (2, *shape) and torch.isfinite(loaded.x).all()


def test_image_claiming_a_huge_size_is_refused(tmp_path):
    """A 60-byte PNG whose header claims 30000 x 30000 pixels (a decompression bomb): refused
    before any pixel is allocated."""
    folder = tmp_path / "bomb"
    folder.mkdir()
    header = (30000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    chunks = [b"IHDR" + header, b"IDAT" + zlib.compress(b"\0\0"), b"IEND"]
    png = b"\x89PNG\r\n\x1a\n" + b"".join(
        (len(c) - 4).to_bytes(4, "big") + c + zlib.crc32(c).to_bytes(4, "big") for c in chunks)
    (folder / "bomb.png").write_bytes(png)
    with pytest.raises(IntqError, match="cannot read image .*bomb.png: Image size "
                                        r"\(900000000 pixels\) exceeds limit"):
        load_user_data(folder, input_shape=(1, 8, 8))


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    state = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Linear(3, 2)).state_dict()
    torch.save(state, folder / "zip.pt")
    torch.save(state, folder / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save({"state_dict": state, "epoch": 3}, folder / "checkpoint.pt")
    save_file(state, folder / "w.safetensors")
    save_program(random_cnn(0, weight_bits=4), folder / "program.safetensors")
    return {path.name: path.read_bytes() for path in folder.iterdir()}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, on damaged pickles
@FUZZ
@given(st.sampled_from(["zip.pt", "legacy.pt", "checkpoint.pt", "w.safetensors"]), _EDITS)
def test_damaged_weights_files(tmp_path, weights_files, name, edits):
    path = tmp_path / name
    path.write_bytes(_edit(weights_files[name], edits))
    try:
        state = read_state_dict(path)
    except IntqError as exc:
        assert "\n" not in str(exc)
        return
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


@FUZZ
@given(_EDITS)
def test_damaged_program_files(tmp_path, weights_files, edits):
    """load_program documents ValueError for any defect."""
    path = tmp_path / "program.safetensors"
    path.write_bytes(_edit(weights_files["program.safetensors"], edits))
    try:
        load_program(path)
    except ValueError:
        pass


_NAME = st.text(string.ascii_letters + string.digits + "_-.", min_size=0, max_size=12)


@st.composite
def _specs(draw, folder: Path) -> str:
    """FILE.py:FACTORY with real, missing and damaged files; package.module:FACTORY with
    modules that cannot be imported; or any short text."""
    kind = draw(st.sampled_from(["file", "module", "text"]))
    if kind == "file":
        stem = draw(st.sampled_from(["model", "damaged", "missing", "notes"]))
        suffix = draw(st.sampled_from([".py", ".txt", ""]))
        sep = draw(st.sampled_from([":", "::", "", ":/"]))
        return f"{folder}/{stem}{suffix}{sep}{draw(_NAME)}"
    if kind == "module":
        spec = f"{draw(_NAME)}:{draw(_NAME)}"
    else:
        spec = draw(st.text(string.printable, max_size=30))
    source = spec.rpartition(":")[0]
    top = source.split(".")[0]
    # never import a module that exists (random names like 'this' or 'antigravity' act)
    assume("/" in source or not top.isidentifier() or importlib.util.find_spec(top) is None)
    return spec


MODEL_PY = """
import torch


def build():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten())


def broken():
    raise ValueError("broken")
"""


@pytest.fixture(scope="module")
def spec_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("specs")
    (folder / "model.py").write_text(MODEL_PY)
    (folder / "notes.txt").write_text("not python\n")
    return folder


@FUZZ
@given(st.data())
def test_model_spec_strings(spec_folder, data):
    (spec_folder / "damaged.py").write_bytes(_edit(MODEL_PY.encode(), data.draw(_EDITS)))
    spec = data.draw(_specs(spec_folder))
    try:
        loaded = load_model_spec(spec)
    except IntqError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(loaded.model, torch.nn.Module)
