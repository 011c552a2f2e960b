"""Long fuzz run of the ONNX exporter and of the input parsers: how many random programs and
damaged files were generated, and how many behaved.

1. Exporter. ``--programs`` random small CNN IntPrograms per arm, drawn by the hypothesis
   strategy of tests/reliability/random_programs.py (convs with any kernel, stride, dilation,
   asymmetric padding and groups; max/avg pools, pads, residual adds, concats, lookup tables,
   squeeze-and-excitation gates (QMul), channel shuffles, slices, nearest resizes; linear heads;
   uint8/int8 activations, 2-8 bit weights, per-channel or per-tensor scales, fixed or dynamic
   batch). Two arms: output ranges jittered by e^±1.2 (the CI test's setting) and by e^±4
   (extreme requantization multipliers). Each program runs in the reference interpreter
   ("float32_half_even") and in ONNX Runtime (``export_onnx(..., intermediates=True)``, weight
   type "auto") on one random input batch; every integer tensor and the float output must be
   identical. Outcomes: agreed; disagreed (a bug); refused by the exporter with its documented
   ValueError (counted by reason); refused by ONNX Runtime at load time (a bug).
2. Parsers. ``--parser-examples`` damaged inputs per parser (tests/reliability/parser_fuzz.py):
   accepted with a sane result, refused with one error line, or anything else (a bug).

Hypothesis generates without shrinking, from ``--seed`` (the second exporter arm from
``--seed`` + 1); the same package versions give the same run.
Writes benchmarks/results/fuzz_exporters.{json,md}.

    .venv/bin/python benchmarks/fuzz_exporters.py [--programs 300] [--parser-examples 1000]
"""

import argparse
import collections
import json
import platform
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import hypothesis
import numpy as np
import onnxruntime
import torch
from hypothesis import HealthCheck, Phase, given, seed, settings

from intq.convert.program import (
    Pad,
    QAdd,
    QAvgPool2d,
    QConcat,
    QConv2d,
    QGlobalAvgPool,
    QLinear,
    QLookup,
    QMaxPool2d,
    QMul,
    ResizeNearest,
    Slice,
    Transpose,
)
from intq.export import export_onnx
from intq.runtime import OrtSession, run_reference
from intq.runtime.onnxruntime import cpu_has_vnni

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from reliability.parser_fuzz import PARSERS  # noqa: E402
from reliability.random_programs import fuzz_cases  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
JITTERS = (1.2, 4.0)
_SHOWN_FAILURES = 5


def _settings(examples: int, seed_value: int):
    def decorate(test):
        return seed(seed_value)(settings(
            max_examples=examples, deadline=None, database=None, derandomize=False,
            phases=[Phase.generate], suppress_health_check=list(HealthCheck))(test))

    return decorate


def _features(program) -> set[str]:
    """What a program exercises (counted once per program)."""
    found = {f"activations {next(iter(program.tensors.values())).dtype}"}
    shape = program.inputs[0].shape
    found.add("dynamic batch" if shape[0] is None else "fixed batch")
    for op in program.ops:
        if isinstance(op, QConv2d):
            cin = op.weight.shape[1] * op.groups
            found.add(f"{op.weight_bits}-bit weights")
            found.add("per-channel" if len(op.weight_scale) > 1 else "per-tensor")
            found.add("depthwise conv" if op.groups == cin > 1 else
                      "grouped conv" if op.groups > 1 else "dense conv")
            found |= {name for name, hit in (
                ("strided conv", max(op.stride) > 1), ("dilated conv", max(op.dilation) > 1),
                ("asymmetric conv padding", len(set(op.padding)) > 1),
                ("non-square kernel", op.weight.shape[2] != op.weight.shape[3]),
                ("weight zero point != 0", op.weight_zero_point != 0),
                ("conv with bias", op.bias is not None)) if hit}
        elif isinstance(op, QMaxPool2d):
            found.add("max pool")
            pads = op.padding
            if max(pads[0], pads[2]) >= op.kernel[0] or max(pads[1], pads[3]) >= op.kernel[1]:
                found.add("max pool padding >= kernel (dilated)")
        else:
            names = {QAvgPool2d: "avg pool", QGlobalAvgPool: "global avg pool", QAdd: "add",
                     QConcat: "concat", Pad: "pad", QLinear: "linear", QLookup: "lookup table",
                     QMul: "mul (broadcast)", Transpose: "transpose", Slice: "slice",
                     ResizeNearest: "nearest resize"}
            found |= {names[type(op)]} if type(op) in names else set()
    return found


def _run_program(case) -> tuple[str, str, int, int]:
    """(outcome, detail, tensors compared, integers compared)."""
    expected = run_reference(case.program, case.x, return_all=True)
    try:
        model = export_onnx(case.program, intermediates=True).SerializeToString()
    except ValueError as exc:
        reason = re.sub(r"\d+(\.\d+)?(e-?\d+)?", "N", str(exc).split(": ", 1)[-1])
        return "exporter refused", reason, 0, 0
    try:
        session = OrtSession(model)
    except Exception as exc:  # onnxruntime's load errors have their own types
        return "onnxruntime refused", f"{case.description}: {str(exc)[-200:]}", 0, 0
    got = session.run_all(case.x)
    names = [*case.program.tensors, *case.program.outputs]
    wrong = [n for n in names if got[n].dtype != expected[n].dtype
             or not np.array_equal(got[n], expected[n])]
    if wrong:
        return "disagreed", f"{case.description}: tensors {wrong}", len(names), 0
    return "agreed", "", len(names), sum(int(expected[n].size) for n in names)


def exporter_arm(programs: int, jitter: float, seed_value: int) -> dict:
    outcomes, reasons, features = (collections.Counter() for _ in range(3))
    failures, compared = [], [0, 0]
    start = time.perf_counter()

    @_settings(programs, seed_value)
    @given(fuzz_cases(jitter=jitter))
    def one(case):
        outcome, detail, tensors, integers = _run_program(case)
        outcomes[outcome] += 1
        features.update(_features(case.program))
        compared[0] += tensors
        compared[1] += integers
        if outcome == "exporter refused":
            reasons[detail] += 1
        elif outcome != "agreed" and len(failures) < _SHOWN_FAILURES:
            failures.append(detail)

    one()
    return {
        "jitter": jitter,
        "generated": sum(outcomes.values()),
        "agreed": outcomes["agreed"],
        "disagreed": outcomes["disagreed"],
        "exporter_refused": outcomes["exporter refused"],
        "onnxruntime_refused": outcomes["onnxruntime refused"],
        "refusal_reasons": dict(reasons.most_common()),
        "tensors_compared": compared[0],
        "integers_compared": compared[1],
        "features": dict(sorted(features.items())),
        "failures": failures,
        "seconds": round(time.perf_counter() - start, 1),
    }


def parser_run(name: str, examples: int, seed_value: int) -> dict:
    strategy, check = PARSERS[name]
    outcomes, failures = collections.Counter(), []
    with tempfile.TemporaryDirectory(prefix="intq-fuzz-") as tmp:

        @_settings(examples, seed_value)
        @given(strategy)
        def one(case):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # numpy's and torch's notes on odd files
                    outcomes[check(Path(tmp), *case)] += 1
            except Exception as exc:  # any other outcome is a bug, recorded
                outcomes["other"] += 1
                if len(failures) < _SHOWN_FAILURES:
                    failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")

        one()
    return {"parser": name, "examples": sum(outcomes.values()), "accepted": outcomes["accepted"],
            "refused": outcomes["refused"], "other": outcomes["other"], "failures": failures}


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [
        "# Exporter and parser fuzz",
        "",
        f"`benchmarks/fuzz_exporters.py --programs {result['programs']} --parser-examples "
        f"{result['parser_examples']} --seed {result['seed']}`: onnxruntime "
        f"{env['onnxruntime']}, hypothesis {env['hypothesis']}, {env['machine']}, "
        f"VNNI: {env['cpu_has_vnni']}.",
        "",
        "## Reference interpreter vs ONNX Runtime on random CNN IntPrograms",
        "",
        "Every integer tensor and the float output compared element by element "
        "(reference mode float32_half_even, weight type auto).",
        "",
        "| output-range jitter | generated | agreed | disagreed | exporter refused (documented) "
        "| ONNX Runtime refused | tensors compared | integers compared | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in result["exporter"]:
        lines.append(f"| e^±{arm['jitter']} | {arm['generated']} | {arm['agreed']} | "
                     f"{arm['disagreed']} | {arm['exporter_refused']} | "
                     f"{arm['onnxruntime_refused']} | {arm['tensors_compared']} | "
                     f"{arm['integers_compared']:,} | {arm['seconds']} |")
    reasons = collections.Counter()
    for arm in result["exporter"]:
        reasons.update(arm["refusal_reasons"])
    if reasons:
        lines += ["", "Exporter refusals (a ValueError naming the op, by design):", ""]
        lines += [f"- {n} x {reason}" for reason, n in reasons.most_common()]
    failures = [f for arm in result["exporter"] for f in arm["failures"]]
    lines += ["", "Failures: " + ("none." if not failures else "")]
    lines += [f"- {f}" for f in failures]
    names = sorted({k for arm in result["exporter"] for k in arm["features"]})
    lines += ["", "Programs exercising each feature:", "",
              "| feature | " + " | ".join(f"e^±{a['jitter']}" for a in result["exporter"]) + " |",
              "|---|" + "---|" * len(result["exporter"])]
    lines += [f"| {name} | " + " | ".join(str(a["features"].get(name, 0))
                                          for a in result["exporter"]) + " |" for name in names]
    lines += ["", "## Input parsers on damaged files", "",
              "| parser | examples | accepted (sane result) | refused (one error line) | "
              "anything else |", "|---|---|---|---|---|"]
    lines += [f"| {p['parser']} | {p['examples']} | {p['accepted']} | {p['refused']} | "
              f"{p['other']} |" for p in result["parsers"]]
    parser_failures = [f for p in result["parsers"] for f in p["failures"]]
    lines += ["", "Failures: " + ("none." if not parser_failures else "")]
    lines += [f"- {f}" for f in parser_failures]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=300, help="programs per jitter arm")
    parser.add_argument("--parser-examples", type=int, default=1000, help="inputs per parser")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    onnxruntime.set_default_logger_severity(3)
    result = {
        "programs": args.programs,
        "parser_examples": args.parser_examples,
        "seed": args.seed,
        "environment": {"onnxruntime": onnxruntime.__version__,
                        "hypothesis": hypothesis.__version__,
                        "machine": platform.processor() or platform.machine(),
                        "cpu_has_vnni": cpu_has_vnni()},
        "exporter": [exporter_arm(args.programs, jitter, args.seed + i)
                     for i, jitter in enumerate(JITTERS)],
        "parsers": [parser_run(name, args.parser_examples, args.seed) for name in PARSERS],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fuzz_exporters.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "fuzz_exporters.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
