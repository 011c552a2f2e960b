"""The peer model of benchmarks/litert_efficientnet.py: EfficientNet-Lite0 made int8 .tflite by
the PyTorch-to-LiteRT converter (PyPI ``ai-edge-torch==0.7.2``, which installs
``litert-torch``), with its PT2E quantizer (symmetric, per-channel weights, static
activations), calibrated on the same natural-image crops as intq.

ai-edge-torch needs no TensorFlow but pulls jax, transformers, torchao and its own torch
(2.14), so it runs in a separate virtual environment, never in intq's:

    python -m venv --system-site-packages /tmp/aet-venv
    /tmp/aet-venv/bin/pip install ai-edge-torch==0.7.2
    PYTHONPATH=src /tmp/aet-venv/bin/python benchmarks/litert_torch_peer.py OUT.tflite \\
        [--calib 256] [--site-packages .venv/lib/python3.11/site-packages]

``--site-packages`` (appended to sys.path, after the environment's own packages) gives
access to intq's model and data packages.
"""

import argparse
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("output")
    p.add_argument("--calib", type=int, default=256)
    p.add_argument("--site-packages", default=".venv/lib/python3.11/site-packages")
    args = p.parse_args()
    sys.path.append(args.site_packages)

    import litert_torch
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    from intq.zoo import MODEL_ZOO, load_model
    from intq.zoo.natural_images import load_natural_images

    torch.set_num_threads(1)
    model = load_model("efficientnet-lite0").eval()
    calib = load_natural_images("calibration", args.calib,
                                MODEL_ZOO["efficientnet-lite0"].normalization).x
    example = (calib[:1],)
    start = time.perf_counter()
    graph = torch.export.export(model, example).module()
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True,
                                                         is_dynamic=False))
    graph = quantize_pt2e.prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i in range(args.calib):  # the exported graph has batch 1
            graph(calib[i:i + 1])
    graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
    edge = litert_torch.convert(graph, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    edge.export(args.output)
    print(f"converted in {time.perf_counter() - start:.1f} s -> {args.output}")


if __name__ == "__main__":
    main()
