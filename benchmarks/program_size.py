"""File sizes of EfficientNet-Lite0: float ONNX vs intq int8 ONNX vs IntProgram files (8/4 bit).

    .venv/bin/python benchmarks/program_size.py
Writes benchmarks/results/program_size.{json,md}. Sizes do not depend on the calibration data,
so 16 calibration crops are enough.
"""

import json
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from peers import export_float_onnx  # noqa: E402

from intq.convert import save_program  # noqa: E402
from intq.convert.from_graph import convert_to_program  # noqa: E402
from intq.export.onnx import export_onnx  # noqa: E402
from intq.ptq import quantize  # noqa: E402
from intq.recipes import get_recipe  # noqa: E402
from intq.zoo import load_model  # noqa: E402
from intq.zoo.natural_images import load_natural_images  # noqa: E402
from intq.zoo.registry import MODEL_ZOO  # noqa: E402

LITE0_NORMALIZATION = MODEL_ZOO["efficientnet-lite0"].normalization

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    warnings.filterwarnings("ignore")
    model = load_model("efficientnet-lite0")
    calib = load_natural_images("calibration", 16, LITE0_NORMALIZATION).x
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        float_bytes = export_float_onnx(model, (3, 224, 224), tmp / "f.onnx").stat().st_size
        rows.append(("float32 ONNX", float_bytes))
        for recipe in ("sym-per-channel-8", "sym-per-channel-4"):
            qgm = quantize(model, calib, get_recipe(recipe), progress=False)
            program = convert_to_program(qgm, (3, 224, 224))
            export_onnx(program, tmp / "q.onnx", weight_type="s8")
            save_program(program, tmp / "q.intq")
            rows.append((f"intq ONNX, {recipe} (8-bit weight tensors)",
                         (tmp / "q.onnx").stat().st_size))
            rows.append((f"intq IntProgram file, {recipe} (packed below 8 bits)",
                         (tmp / "q.intq").stat().st_size))
    table = [{"file": name, "bytes": size, "ratio_vs_float_onnx": size / float_bytes}
             for name, size in rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "program_size.json").write_text(json.dumps(table, indent=1))
    lines = ["| file | bytes | ratio vs float ONNX |", "|---|---|---|"]
    lines += [f"| {r['file']} | {r['bytes']:,} | {r['ratio_vs_float_onnx']:.4f}x |" for r in table]
    md = "\n".join(lines) + "\n"
    (RESULTS / "program_size.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
