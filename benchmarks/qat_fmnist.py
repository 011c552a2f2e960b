"""QAT vs PTQ vs float on a Fashion-MNIST zoo model, naive vs corrected BN folding, step time.

What it runs (2 shared CPU cores, 1 torch thread, so everything is short and stated):
1. float: MobileNet-v1-fmnist trained from scratch for 1 epoch on the first TRAIN images
   (the zoo's recipe otherwise); no shipped weights exist yet.
2. PTQ W8A8 and W4A8 (sym per channel, percentile activations) calibrated on 512 images.
3. QAT W8A8 and W4A8 fine-tuned from the float model for STEPS steps of 64 (corrected BN
   fold, BN frozen at 50%, ranges at 75%), and W4A8 with the naive fold; the hold-out
   accuracy of the simulated model is recorded every EVERY steps (curves).
4. Accuracy of every integer model measured on the exported ONNX in ONNX Runtime on the
   first TEST test images; step time of QAT vs float training on the same batches.
Writes benchmarks/results/qat_fmnist.{json,md,png}.
"""

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from intq import ptq
from intq.convert.from_graph import convert_to_program
from intq.export.onnx import export_onnx
from intq.qat import QATSchedule, apply_schedule, convert_qat, prepare_qat
from intq.runtime.onnxruntime import OrtSession
from intq.zoo import MODEL_ZOO, evaluate_accuracy, load_fashion_mnist, train_classifier

MODEL, TRAIN, TEST, STEPS, EVERY, BATCH = "mobilenet-v1-fmnist", 10000, 2000, 150, 25, 64
OUT = Path(__file__).parent / "results"


def onnx_accuracy(qgm, test) -> float:
    path = OUT / "qat_tmp.onnx"
    export_onnx(convert_to_program(qgm, (1, 28, 28)), path)
    session = OrtSession(path)
    correct = sum(int((np.argmax(session.run(x.numpy()), 1) == y.numpy()).sum())
                  for x, y in test.batches(500))
    path.unlink()
    return correct / len(test)


def qat_run(model, train, test, recipe, correction=True):
    qgm = prepare_qat(model, train.x[:2], recipe, correction=correction)
    opt = torch.optim.SGD(qgm.parameters(), lr=0.005, momentum=0.9)
    schedule = QATSchedule.for_total_steps(STEPS)
    g = torch.Generator().manual_seed(0)
    curve, seconds = [], 0.0
    for step in range(STEPS):
        idx = torch.randint(0, len(train), (BATCH,), generator=g)
        apply_schedule(qgm, schedule, step)
        start = time.perf_counter()
        loss = F.cross_entropy(qgm(train.x[idx]), train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        seconds += time.perf_counter() - start
        if (step + 1) % EVERY == 0:
            curve.append((step + 1, evaluate_accuracy(qgm, test.head(500))))
            qgm.train()
    return convert_qat(qgm), curve, seconds / STEPS


def float_step_seconds(model, train) -> float:
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(30):
        idx = torch.randint(0, len(train), (BATCH,), generator=g)
        loss = F.cross_entropy(model(train.x[idx]), train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return (time.perf_counter() - start) / 30


def main() -> None:
    torch.set_num_threads(1)
    train, test = load_fashion_mnist("train").head(TRAIN), load_fashion_mnist("test").head(TEST)
    torch.manual_seed(0)
    model = train_classifier(MODEL_ZOO[MODEL].build(), train, epochs=1, lr=0.1, seed=0,
                             progress=False)
    rows = {"float": {"accuracy": evaluate_accuracy(model, test)}}
    for bits in (8, 4):
        qgm = ptq.quantize(model, train.x[:512], f"sym-per-channel-{bits}", progress=False)
        rows[f"PTQ W{bits}A8"] = {"accuracy": onnx_accuracy(qgm, test)}
    curves, step_times = {}, {}
    for label, recipe, correction in (("QAT W8A8", "sym-per-channel-8", True),
                                      ("QAT W4A8", "sym-per-channel-4", True),
                                      ("QAT W4A8 naive BN fold", "sym-per-channel-4", False)):
        qgm, curves[label], step_times[label] = qat_run(model, train, test, recipe, correction)
        rows[label] = {"accuracy": onnx_accuracy(qgm, test)}
    float_step = float_step_seconds(model, train)
    ratios = {k: v / float_step for k, v in step_times.items()}
    result = {"model": MODEL, "train_images": TRAIN, "test_images": TEST, "qat_steps": STEPS,
              "batch": BATCH, "rows": rows, "curves": curves,
              "step_time_ratio_qat_over_float": ratios, "float_step_seconds": float_step}
    OUT.mkdir(exist_ok=True)
    (OUT / "qat_fmnist.json").write_text(json.dumps(result, indent=2))
    lines = [f"# QAT on {MODEL} ({TRAIN} train images, 1 float epoch, {STEPS} QAT steps of "
             f"{BATCH}; accuracy on the first {TEST} test images in ONNX Runtime)", "",
             "| model | top-1 |", "|---|---|"]
    lines += [f"| {k} | {v['accuracy']:.2%} |" for k, v in rows.items()]
    lines += ["", "Hold-out (first 500 test images, simulated) accuracy during QAT:", "",
              "| step | " + " | ".join(curves) + " |", "|---" * (len(curves) + 1) + "|"]
    for i, (step, _) in enumerate(next(iter(curves.values()))):
        lines.append(f"| {step} | " + " | ".join(f"{c[i][1]:.2%}" for c in curves.values()) + " |")
    lines += ["", "QAT step time / float step time (same batches, 1 thread): "
              + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())]
    (OUT / "qat_fmnist.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for label, curve in curves.items():
        plt.plot(*zip(*curve, strict=True), marker="o", label=label)
    plt.xlabel("QAT step")
    plt.ylabel("simulated top-1 (500 test images)")
    plt.legend()
    plt.savefig(OUT / "qat_fmnist.png", dpi=100)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
