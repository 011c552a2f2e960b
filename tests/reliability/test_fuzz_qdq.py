"""Fuzz of the QDQ ONNX exporter (short CI run): the exporter fuzz's random small CNN
IntPrograms give the reference interpreter's integers in every tensor in ONNX Runtime, which
fuses the QDQ patterns into its QLinear kernels (see tests/export/test_onnx_qdq.py)."""

import numpy as np
import onnxruntime
from hypothesis import HealthCheck, given, settings

from intq.export.onnx_qdq import export_onnx_qdq
from intq.runtime import OrtSession, run_reference

from .random_programs import fuzz_cases


@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fuzz_cases())
def test_fuzzed_programs_identical_to_the_reference_in_onnxruntime(case):
    """The exporter fuzz's random CNNs (shapes, groups, strides, paddings, dilations, pools,
    adds, concats, bit widths, dtypes): the QDQ model computes the reference's integers."""
    onnxruntime.set_default_logger_severity(3)
    got = OrtSession(export_onnx_qdq(case.program, intermediates=True).SerializeToString()
                     ).run_all(case.x)
    expected = run_reference(case.program, case.x, return_all=True)
    for name in [*case.program.tensors, *case.program.outputs]:
        np.testing.assert_array_equal(got[name], expected[name],
                                      err_msg=f"{name} in {case.description}")
