"""Fuzz of the ONNX exporter (short CI run): random small CNN IntPrograms (shapes, groups,
strides, paddings, dilations, pools, adds, concats, lookup tables, gates, shuffles, slices,
resizes, bit widths, dtypes) give identical
integers in every tensor in the reference interpreter ("float32_half_even") and in ONNX
Runtime. benchmarks/fuzz_exporters.py runs the same strategy on hundreds of programs."""

import numpy as np
import onnxruntime
from hypothesis import HealthCheck, given, settings

from intq.convert import ProgramBuilder, QTensor
from intq.export import export_onnx
from intq.runtime import OrtSession, run_reference

from .random_programs import fuzz_cases


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fuzz_cases())
def test_reference_equals_onnx_runtime_on_random_cnns(case):
    onnxruntime.set_default_logger_severity(3)
    model = export_onnx(case.program, intermediates=True)
    got = OrtSession(model.SerializeToString()).run_all(case.x)
    expected = run_reference(case.program, case.x, return_all=True)
    for name in [*case.program.tensors, *case.program.outputs]:
        assert got[name].dtype == expected[name].dtype, (name, case.description)
        np.testing.assert_array_equal(got[name], expected[name],
                                      err_msg=f"{name} in {case.description}")


def test_max_pool_padding_beyond_the_kernel_found_by_the_fuzz():
    """Padding 2 >= kernel 2 but < the dilated kernel 3: valid in an IntProgram, refused by
    ONNX Runtime's MaxPool (pads < kernel); exported as an explicit Pad of the smallest code."""
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (2, 3, 7, 6)), QTensor(0.05, -3, "int8"))
    m = b.max_pool2d(q, (2, 3), stride=(1, 2), padding=(2, 0, 1, 2), dilation=(2, 1))
    program = b.build([b.dequantize(m, name="y")])
    x = np.random.default_rng(0).normal(-2.0, 3.0, (2, 3, 7, 6)).astype(np.float32)
    got = OrtSession(export_onnx(program).SerializeToString()).run(x)
    np.testing.assert_array_equal(got, run_reference(program, x)["y"])
