"""Fuzz of the input parsers (short CI run): valid .npy/.npz, image, weights and IntProgram
files with random byte edits, random bytes, random model spec strings, damaged ONNX models
run by ``intq eval`` / ``intq bench``, and .npz archives built member by member. Every outcome is a
success with a sane result or one IntqError (ValueError for the IntProgram loader, as
documented); never another exception. benchmarks/fuzz_exporters.py runs them longer."""

import zlib

import pytest
from hypothesis import HealthCheck, given, settings

from intq.errors import IntqError
from intq.zoo.user_data import load_user_data

from .parser_fuzz import (
    PARSERS,
    check_array_file,
    check_image,
    check_npz_archive,
    check_onnx_cli,
    check_program,
    check_random_bytes,
    check_spec,
    check_weights,
)

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@FUZZ
@given(PARSERS["npy/npz files"][0])
def test_damaged_array_files(tmp_path, case):
    check_array_file(tmp_path, *case)


@FUZZ
@given(PARSERS["random bytes as .npy/.npz"][0])
def test_random_bytes_are_never_array_files(tmp_path, case):
    check_random_bytes(tmp_path, *case)


@FUZZ
@given(PARSERS["image files"][0])
def test_damaged_images(tmp_path, case):
    check_image(tmp_path, *case)


@FUZZ
@given(PARSERS["weights files"][0])
def test_damaged_weights_files(tmp_path, case):
    check_weights(tmp_path, *case)


@FUZZ
@given(PARSERS["IntProgram files"][0])
def test_damaged_program_files(tmp_path, case):
    check_program(tmp_path, *case)


@FUZZ
@given(PARSERS["model spec strings"][0])
def test_model_spec_strings(tmp_path, case):
    check_spec(tmp_path, *case)


@FUZZ
@given(PARSERS["ONNX models (eval, bench)"][0])
def test_damaged_onnx_models_in_eval_and_bench(tmp_path, case):
    check_onnx_cli(tmp_path, *case)


@FUZZ
@given(PARSERS[".npz archives (members)"][0])
def test_npz_archives_member_by_member(tmp_path, case):
    check_npz_archive(tmp_path, *case)


def test_image_claiming_a_huge_size_is_refused(tmp_path):
    """A 60-byte PNG whose header claims 30000 x 30000 pixels (a decompression bomb): refused
    before any pixel is allocated, with PIL's default limit."""
    header = (30000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    chunks = [b"IHDR" + header, b"IDAT" + zlib.compress(b"\0\0"), b"IEND"]
    png = b"\x89PNG\r\n\x1a\n" + b"".join(
        (len(c) - 4).to_bytes(4, "big") + c + zlib.crc32(c).to_bytes(4, "big") for c in chunks)
    (tmp_path / "bomb.png").write_bytes(png)
    with pytest.raises(IntqError, match="cannot read image .*bomb.png: Image size "
                                        r"\(900000000 pixels\) exceeds limit"):
        load_user_data(tmp_path, input_shape=(1, 8, 8))
