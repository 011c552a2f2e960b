"""EfficientNet-Lite0 in OpenVINO: intq's QDQ export vs NNCF's int8 model vs float, against
ONNX Runtime float32 and intq's QOperator model in ONNX Runtime.

Models, all from ``intq.zoo.load_model("efficientnet-lite0")`` with its published weights:
- float32 ONNX (``peers.export_float_onnx``, opset 17), run in ONNX Runtime and in OpenVINO;
- intq int8: ``intq.ptq.quantize`` with the default recipe (W8 symmetric per channel, A8
  asymmetric per tensor, MSE ranges, bias correction) on ``--calib`` natural-image crops,
  converted to an IntProgram, exported as QOperator ONNX (``export_onnx``, weight_type s8,
  run in ONNX Runtime) and as QDQ ONNX (``export_onnx_qdq``, run in OpenVINO and in ONNX
  Runtime);
- NNCF int8: ``nncf.quantize`` (default preset and options) of the float ONNX read by
  OpenVINO, on the same crops, saved as OpenVINO IR. NNCF is not an intq dependency:
  ``pip install nncf==3.4.0`` (it adds scikit-learn, pydot, ninja and a few small packages);
  without it the NNCF row is skipped.

Latency: one session per model, 1 inference thread (ONNX Runtime: 1 intra-op thread;
OpenVINO: INFERENCE_NUM_THREADS 1, one stream, LATENCY hint, INFERENCE_PRECISION_HINT f32,
no CPU pinning, batch fixed to 1; ``intq.runtime.openvino.OpenVinoSession``), batch 1,
one seeded standard-normal input; ``--warmup`` untimed rounds, then ``--repeats`` rounds in
which every model runs once, in rotating order
(``intq.eval.latency.measure_latency``). Ratios are of medians from this one run, to ONNX
Runtime float32. A second rotation of the same length measures the CPU time of the process
per run (``time.process_time``: every thread of the process; with one inference thread per
session that is the run's compute, without the waits for a core that other processes on the
shared machine cause).

Fidelity: logits of every model on the first ``--eval`` evaluation crops (a stream disjoint
from calibration) against the float PyTorch model: top-1 agreement and logit SQNR
(``intq.eval.compare_logits``), plus intq OpenVINO against intq ONNX Runtime.
OpenVINO layer precisions: how many layers of each type ran in int8 (u8/i8) or f32.

    .venv/bin/python benchmarks/openvino_efficientnet.py [--repeats 500] [--calib 256]
Writes benchmarks/results/openvino_efficientnet.{json,md}.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from peers import export_float_onnx  # noqa: E402

from intq.convert.from_graph import convert_to_program  # noqa: E402
from intq.eval import compare_logits  # noqa: E402
from intq.eval.latency import measure_latency, ort_session, speedup  # noqa: E402
from intq.export.onnx import export_onnx  # noqa: E402
from intq.export.onnx_qdq import export_onnx_qdq  # noqa: E402
from intq.ptq import quantize  # noqa: E402
from intq.runtime.openvino import OpenVinoSession  # noqa: E402
from intq.zoo import load_model  # noqa: E402
from intq.zoo.natural_images import load_natural_images  # noqa: E402
from intq.zoo.registry import MODEL_ZOO  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SHAPE = (3, 224, 224)
NORMALIZATION = MODEL_ZOO["efficientnet-lite0"].normalization
BASELINE = "ORT float32"
INTQ_ORT, INTQ_OV, NNCF_OV = ("intq QOperator int8 in ORT", "intq QDQ int8 in OpenVINO",
                              "NNCF int8 in OpenVINO")
# row -> (runtime, file)
MODELS = {
    BASELINE: ("ort", "float.onnx"),
    "OpenVINO float32": ("ov", "float.onnx"),
    INTQ_ORT: ("ort", "intq_qoperator.onnx"),
    "intq QDQ int8 in ORT": ("ort", "intq_qdq.onnx"),
    INTQ_OV: ("ov", "intq_qdq.onnx"),
    NNCF_OV: ("ov", "nncf_int8.xml"),
}
TARGET_VS_FLOAT, SQNR_SLACK_DB = 0.45, 0.5


def build(out: Path, calib: torch.Tensor) -> dict:
    """Write every model file into ``out``; returns build times and what was skipped."""
    model = load_model("efficientnet-lite0")
    export_float_onnx(model, SHAPE, out / "float.onnx")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # widened dead-channel scales
        program = convert_to_program(quantize(model, calib, progress=False), SHAPE)
    info = {"intq_quantize_convert_s": time.perf_counter() - start}
    export_onnx(program, out / "intq_qoperator.onnx", weight_type="s8")
    export_onnx_qdq(program, out / "intq_qdq.onnx")
    info["nncf"] = build_nncf(out, calib)
    return info


def build_nncf(out: Path, calib: torch.Tensor) -> dict:
    try:
        import nncf
    except ImportError:
        return {"version": None, "note": "nncf not installed: pip install nncf==3.4.0"}
    import openvino as ov

    start = time.perf_counter()
    samples = [calib[i:i + 1].numpy() for i in range(len(calib))]
    quantized = nncf.quantize(ov.Core().read_model(str(out / "float.onnx")),
                              nncf.Dataset(samples), subset_size=len(samples))
    ov.save_model(quantized, str(out / "nncf_int8.xml"))
    return {"version": nncf.__version__, "seconds": time.perf_counter() - start,
            "settings": f"nncf.quantize defaults (preset PERFORMANCE: symmetric activations, "
                        f"per-channel weights), subset_size={len(samples)}"}


def runner(runtime: str, path: Path):
    """A function x -> logits (numpy) for one model, 1 thread, batch 1."""
    if runtime == "ov":
        session = OpenVinoSession(path, threads=1, precision="f32", batch=1)
        return session.run, session
    session = ort_session(path, threads=1)
    name = session.get_inputs()[0].name
    return (lambda x: session.run(None, {name: x})[0]), session


def fidelity(runners: dict, x: torch.Tensor) -> dict:
    reference = load_model("efficientnet-lite0")
    with torch.no_grad():
        ref = reference(x)
    logits = {label: torch.from_numpy(np.concatenate([run(x[i:i + 1].numpy())
                                                      for i in range(len(x))]))
              for label, run in runners.items()}
    rows = {label: compare_logits(ref, v).__dict__ for label, v in logits.items()}
    ours = compare_logits(logits[INTQ_ORT], logits[INTQ_OV])
    return {"vs_float_pytorch": rows, "intq_openvino_vs_intq_ort": ours.__dict__,
            "max_abs_logit_diff_intq_ov_vs_ort": float(
                (logits[INTQ_OV] - logits[INTQ_ORT]).abs().max()),
            "logit_std_intq_ort": float(logits[INTQ_ORT].std())}


def latency(runners: dict, repeats: int, warmup: int, seed: int) -> dict:
    x = np.random.default_rng(seed).standard_normal((1, *SHAPE)).astype(np.float32)
    labels = list(runners)
    calls = [lambda r=runners[k]: r(x) for k in labels]
    load_before = os.getloadavg()
    wall = dict(zip(labels, measure_latency(calls, repeats=repeats, warmup=warmup),
                    strict=True))
    cpu = dict(zip(labels, measure_latency(calls, repeats=repeats, warmup=warmup,
                                           clock=time.process_time), strict=True))
    rows = [{"model": k, **s.as_dict(), "ratio_vs_ort_float": s.median_ms
             / wall[BASELINE].median_ms, "speedup_vs_ort_float": speedup(s, wall[BASELINE]),
             "median_cpu_ms": cpu[k].median_ms,
             "cpu_ratio_vs_ort_float": cpu[k].median_ms / cpu[BASELINE].median_ms}
            for k, s in wall.items()]
    load = [round(v, 1) for v in load_before], [round(v, 1) for v in os.getloadavg()]
    return {"rows": rows, "load_average": f"{load[0]} before, {load[1]} after"}


def layer_precisions(session: OpenVinoSession) -> dict:
    counts = Counter()
    for (kind, precision), n in session.layer_precisions().items():
        if kind in ("Convolution", "FullyConnected", "Eltwise", "Pooling", "Reduce"):
            counts[f"{kind} {precision}"] += n
    return dict(sorted(counts.items()))


def verdict(result: dict) -> dict:
    rows = {r["model"]: r for r in result["latency"]["rows"]}
    fid = result["fidelity"]["vs_float_pytorch"]
    ov_ratio = rows[INTQ_OV]["ratio_vs_ort_float"]
    out = {"intq_openvino_ratio_vs_ort_float": ov_ratio,
           "intq_openvino_cpu_ratio_vs_ort_float": rows[INTQ_OV]["cpu_ratio_vs_ort_float"],
           "meets_speed_target": ov_ratio <= TARGET_VS_FLOAT,
           "intq_openvino_sqnr_minus_ort_sqnr_db": fid[INTQ_OV]["sqnr_db"]
           - fid[INTQ_ORT]["sqnr_db"]}
    out["meets_fidelity_target"] = out["intq_openvino_sqnr_minus_ort_sqnr_db"] >= -SQNR_SLACK_DB
    if NNCF_OV in rows:
        out["intq_openvino_vs_nncf_latency"] = (rows[INTQ_OV]["median_ms"]
                                                / rows[NNCF_OV]["median_ms"])
        out["intq_openvino_vs_nncf_cpu"] = (rows[INTQ_OV]["median_cpu_ms"]
                                            / rows[NNCF_OV]["median_cpu_ms"])
        out["at_least_as_fast_as_nncf"] = out["intq_openvino_vs_nncf_latency"] <= 1.0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calib", type=int, default=256, help="calibration crops (default 256)")
    p.add_argument("--eval", type=int, default=512, help="evaluation crops (default 512)")
    p.add_argument("--repeats", type=int, default=500)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    calib = load_natural_images("calibration", args.calib, NORMALIZATION).x
    x = load_natural_images("evaluation", args.eval, NORMALIZATION).x
    import onnxruntime
    import openvino

    with tempfile.TemporaryDirectory(prefix="intq-openvino-") as tmp:
        out = Path(tmp)
        built = build(out, calib)
        models = {k: v for k, v in MODELS.items() if (out / v[1]).exists()}
        pairs = {label: runner(rt, out / file) for label, (rt, file) in models.items()}
        runners = {label: pair[0] for label, pair in pairs.items()}
        result = {
            "environment": {"onnxruntime": onnxruntime.__version__,
                            "openvino": openvino.__version__, "python": platform.python_version(),
                            "cpu": openvino.Core().get_property("CPU", "FULL_DEVICE_NAME"),
                            "openvino_inference_precision": "f32", "threads": 1, "batch": 1},
            "calibration_crops": args.calib, "evaluation_crops": args.eval,
            "repeats": args.repeats, "warmup": args.warmup, "build": built,
            "files_bytes": {f: (out / f).stat().st_size for _, f in models.values()},
            "fidelity": fidelity(runners, x),
            "latency": latency(runners, args.repeats, args.warmup, args.seed),
            "openvino_layer_precisions": {label: layer_precisions(pairs[label][1])
                                          for label, (rt, _) in models.items() if rt == "ov"},
        }
    result["verdict"] = verdict(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "openvino_efficientnet.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "openvino_efficientnet.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    env = result["environment"]
    fid = result["fidelity"]["vs_float_pytorch"]
    lines = [
        "# EfficientNet-Lite0 in OpenVINO: intq QDQ vs NNCF int8 vs float",
        "",
        f"onnxruntime {env['onnxruntime']}, openvino {env['openvino']} (CPU plugin, "
        f"INFERENCE_PRECISION_HINT f32), {env['cpu']}; 1 thread, batch 1, "
        f"{result['repeats']} interleaved repeats after {result['warmup']} warm-up rounds "
        f"(load average {result['latency']['load_average']}). Calibration: "
        f"{result['calibration_crops']} crops; fidelity: {result['evaluation_crops']} held-out "
        "crops against the float PyTorch model. Produced by "
        "`benchmarks/openvino_efficientnet.py`.",
        "",
        "| model | median ms | p10-p90 ms | vs ORT float32 | median CPU ms | CPU vs ORT "
        "float32 | top-1 agree | SQNR dB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["latency"]["rows"]:
        f = fid[r["model"]]
        lines.append(f"| {r['model']} | {r['median_ms']:.2f} | {r['p10_ms']:.2f}-"
                     f"{r['p90_ms']:.2f} | {r['ratio_vs_ort_float']:.2f}x | "
                     f"{r['median_cpu_ms']:.2f} | {r['cpu_ratio_vs_ort_float']:.2f}x | "
                     f"{f['top1_agreement']:.3f} | {f['sqnr_db']:.1f} |")
    v, both = result["verdict"], result["fidelity"]["intq_openvino_vs_intq_ort"]
    lines += [
        "",
        f"- intq QDQ in OpenVINO: {v['intq_openvino_ratio_vs_ort_float']:.2f}x ORT float32 "
        f"in wall time (target <= {TARGET_VS_FLOAT}x: "
        f"{'met' if v['meets_speed_target'] else 'missed'}), "
        f"{v['intq_openvino_cpu_ratio_vs_ort_float']:.2f}x in CPU time"
        + ("" if "intq_openvino_vs_nncf_latency" not in v else
           f"; {v['intq_openvino_vs_nncf_latency']:.3f}x NNCF's latency (target <= 1: "
           f"{'met' if v['at_least_as_fast_as_nncf'] else 'missed'}), "
           f"{v['intq_openvino_vs_nncf_cpu']:.3f}x its CPU time") + ".",
        f"- SQNR, intq OpenVINO minus intq ORT: "
        f"{v['intq_openvino_sqnr_minus_ort_sqnr_db']:+.2f} dB (target >= -{SQNR_SLACK_DB}: "
        f"{'met' if v['meets_fidelity_target'] else 'missed'}).",
        f"- intq OpenVINO vs intq ORT: top-1 agreement {both['top1_agreement']:.3f}, SQNR "
        f"{both['sqnr_db']:.1f} dB, max |logit difference| "
        f"{result['fidelity']['max_abs_logit_diff_intq_ov_vs_ort']:.3f} (logit std "
        f"{result['fidelity']['logit_std_intq_ort']:.2f}).",
        "",
        "OpenVINO layers by runtime precision (u8/i8 = integer kernels):",
        "",
    ]
    for label, counts in result["openvino_layer_precisions"].items():
        lines.append(f"- {label}: " + ", ".join(f"{k} x{n}" for k, n in counts.items()))
    nncf = result["build"]["nncf"]
    lines += ["", f"NNCF: {nncf.get('version')}; {nncf.get('settings', nncf.get('note'))}.",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
