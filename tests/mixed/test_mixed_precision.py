"""Mixed precision on the trained Fashion-MNIST MobileNet: the chosen model, run here again in a
fresh ONNX Runtime session, meets its size and agreement budget; it is the smallest point of
the sensitivity order that does (the next point, measured, misses the target); its 4-bit
layers are packed INT4 in the file; a budget out of reach raises one BudgetError naming the
best reachable point."""

import re

import numpy as np
import onnx
import pytest
import torch

from intq.eval.metrics import top1_agreement
from intq.mixed_precision import (
    LOW_BITS,
    BudgetError,
    MixedPrecisionSearch,
    parse_size,
)
from intq.recipes import get_recipe
from intq.runtime.onnxruntime import OrtSession
from intq.zoo import load_model
from intq.zoo.fashion_mnist import load_fashion_mnist

TARGET = 0.97


@pytest.fixture(scope="module")
def search():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x = load_fashion_mnist("train").x[:480]
    model = load_model("mobilenet-v1-fmnist")
    yield MixedPrecisionSearch(model, x[:160], x[160:],
                               get_recipe("sym-per-channel-8", observer="minmax"))
    torch.set_num_threads(threads)


def ort_agreement(search, onnx_bytes: bytes) -> float:
    session = OrtSession(onnx_bytes)
    logits = torch.from_numpy(np.asarray(session.run(search.holdout.numpy())))
    return top1_agreement(search.reference, logits)


def test_budget_met_on_the_exported_model(search):
    search.rank_layers()
    n = len(search.order)
    max_size = (search.size_of(0) + search.size_of(n)) // 2
    mixed = search.choose(target_agreement=TARGET, max_size=max_size)
    assert len(mixed.onnx_bytes) == mixed.chosen.size_bytes <= max_size
    assert ort_agreement(search, mixed.onnx_bytes) == mixed.chosen.agreement >= TARGET
    low = [name for name, bits in mixed.bits.items() if bits == LOW_BITS]
    assert sorted(low) == sorted(c.name for c in search.order[: mixed.chosen.k])
    model = onnx.load_from_string(mixed.onnx_bytes)
    int4 = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT4]
    assert len(int4) == len(low) > 0
    following = {p.k: p for p in mixed.measured}.get(mixed.chosen.k + 1)
    assert mixed.chosen.k == n or following.agreement < TARGET


def test_size_out_of_reach_names_the_smallest_model(search):
    with pytest.raises(BudgetError, match=r"no configuration fits 1000 bytes: the smallest, "
                       r"all \d+ layers at 4-bit weights, is (\d+) bytes") as info:
        search.choose(max_size=1000)
    smallest = int(re.search(r"is (\d+) bytes", str(info.value))[1])
    assert smallest == search.size_of(len(search.order))
    assert "\n" not in str(info.value)


def test_agreement_out_of_reach_names_the_best_point_within_the_size(search):
    max_size = search.size_of(len(search.order))
    with pytest.raises(BudgetError, match="agreement 1.000 is out of reach: the best is") as info:
        search.choose(target_agreement=1.0, max_size=max_size)
    found = re.search(r"the best is ([\d.]+) \((\d+) layers at 4 bits", str(info.value))
    best, k = float(found[1]), int(found[2])
    assert best == round(search.measure(k).agreement, 3) < 1.0
    assert search.measure(k).size_bytes <= max_size < search.size_of(k - 1)


@pytest.mark.parametrize("text, size", [("1500", 1500), ("3.5MB", 3_500_000),
                                        ("800kB", 800_000), (" 2 mb", 2_000_000)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "-1MB", "0", "inf", "3 parsecs"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="size"):
        parse_size(text)
