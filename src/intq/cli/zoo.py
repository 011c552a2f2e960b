"""``intq zoo``: list the model zoo (dataset, input shape, size, recorded float accuracy)."""

import argparse
import json

from torch import nn

from intq.zoo import ZooModel, list_models

__all__ = ["add_parser", "run", "zoo_rows"]


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "zoo",
        help="list the model zoo",
        description="List the zoo's models with their dataset, input shape, parameter count, "
        "float32 size and recorded float top-1 accuracy.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rows = zoo_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    return 0


def zoo_rows() -> list[dict]:
    """One dict per zoo model: name, dataset, input_shape, params, float32_bytes,
    float_accuracy (fraction or null), weights ('shipped' / 'published'), description."""
    return [_row(entry) for entry in list_models()]


def _row(entry: ZooModel) -> dict:
    model = entry.build()
    return {
        "name": entry.name,
        "dataset": entry.dataset,
        "input_shape": list(entry.input_shape),
        "params": sum(p.numel() for p in model.parameters()),
        "float32_bytes": _float_bytes(model),
        "float_accuracy": entry.float_accuracy,
        "weights": "published" if entry.weights is None else "shipped",
        "description": entry.description,
    }


def _float_bytes(model: nn.Module) -> int:
    """Bytes of the floating-point state (weights and BN statistics) stored as float32."""
    return sum(4 * t.numel() for t in model.state_dict().values() if t.is_floating_point())


def _print_table(rows: list[dict]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(
        box=box.SIMPLE_HEAD,
        caption="float top-1 on the test set; * published ImageNet top-1, not measured here",
    )
    for column in ("model", "dataset", "input", "params", "float32", "float top-1"):
        table.add_column(column, justify="right" if column[0] in "pf" else "left", no_wrap=True)
    for r in rows:
        accuracy = "-" if r["float_accuracy"] is None else f"{r['float_accuracy']:.2%}"
        accuracy += " *" if r["weights"] == "published" else "  "
        table.add_row(
            r["name"],
            r["dataset"],
            "x".join(map(str, r["input_shape"])),
            f"{r['params']:,}",
            f"{r['float32_bytes'] / 2**20:.2f} MiB",
            accuracy,
        )
    console = Console()
    if not console.is_terminal:  # piped: no need to fit a terminal's width
        console = Console(width=120)
    console.print(table)
