"""Fuzz of the LiteRT writer (short run): the random small CNN IntPrograms of the ONNX fuzz
(tests/reliability/random_programs.py: convs, pools, pads, adds, concats, lookup tables, gates,
shuffles, slices, resizes, dtypes) give identical integers in every tensor in the reference
interpreter ("fixed_point") and in LiteRT's reference kernels, or are refused by name
(asymmetric or wide weights, dilated max pools) with nothing written."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from reliability.random_programs import fuzz_cases

from intq.export.tflite import export_tflite
from intq.runtime import run_reference
from intq.runtime.litert import LiteRtSession

REFUSALS = ("symmetric weights of at most 8 bits", "MAX_POOL_2D has no dilation")


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fuzz_cases())
def test_reference_equals_litert_reference_kernels_on_random_cnns(case):
    try:
        data = export_tflite(case.program)
    except ValueError as err:
        assert any(r in str(err) for r in REFUSALS), (str(err), case.description)
        return
    got = LiteRtSession(data, ref_kernels=True, preserve_all=True).run_all(case.x)
    expected = run_reference(case.program, case.x, mode="fixed_point", return_all=True)
    for name in [*case.program.tensors, *case.program.outputs]:
        assert got[name].dtype == expected[name].dtype, (name, case.description)
        np.testing.assert_array_equal(got[name], expected[name],
                                      err_msg=f"{name} in {case.description}")
