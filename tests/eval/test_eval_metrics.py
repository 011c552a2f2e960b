"""Metrics against hand-computed values and against plain-Python references."""

import math
import random
from fractions import Fraction

import pytest
import torch

from intq.eval.metrics import (
    LogitComparison,
    compare_logits,
    logit_sqnr_db,
    mean_kl_divergence,
    mean_max_softmax,
    top1_accuracy,
    top1_agreement,
    top1_histogram,
    topk_agreement,
    topk_overlap,
)

# argmax per row: 1, 0, 2, 0 (the tie in the last row goes to the first index)
LOGITS = torch.tensor([[1.0, 2.0, 0.0], [3.0, 1.0, 1.0], [0.0, 0.0, 5.0], [2.0, 2.0, 1.0]])


def _random_logits(rows=50, classes=12, seed=0):
    rng = random.Random(seed)
    return [[rng.gauss(0, 3) for _ in range(classes)] for _ in range(rows)]


def _py_topk(row, k):
    return {i for i, _ in sorted(enumerate(row), key=lambda t: -t[1])[:k]}


def test_top1_accuracy_by_hand():
    assert top1_accuracy(LOGITS, torch.tensor([1, 0, 1, 0])) == 0.75
    assert top1_accuracy(LOGITS, torch.tensor([1, 0, 2, 0])) == 1.0
    assert top1_accuracy(LOGITS, torch.tensor([0, 1, 0, 1])) == 0.0


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.tensor([1, 0, 1]), r"shape \(4,\)"),
        (torch.tensor([1.0, 0.0, 1.0, 0.0]), "integers"),
        (torch.tensor([1, 0, 3, 0]), r"lie in \[0, 3\)"),
        (torch.tensor([1, -1, 2, 0]), r"lie in \[0, 3\)"),
    ],
)
def test_top1_accuracy_rejects_bad_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        top1_accuracy(LOGITS, labels)


def test_top1_agreement_by_hand():
    candidate = torch.tensor([[0.0, 9.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert top1_agreement(LOGITS, candidate) == 0.75
    assert top1_agreement(LOGITS, LOGITS) == 1.0


def test_topk_overlap_and_agreement_by_hand():
    reference = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    candidate = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 1.0, 4.0, 0.0, -1.0]])
    # top-2 sets: ref {0,1} both rows; cand {4,3} and {0,2}: overlaps 0 and 1 of 2
    assert topk_overlap(reference, candidate, k=2) == 0.25
    # reference top-1 (class 0) in cand top-2: no, yes
    assert topk_agreement(reference, candidate, k=2) == 0.5
    assert topk_overlap(reference, candidate, k=5) == 1.0
    assert topk_agreement(reference, candidate, k=5) == 1.0


def test_topk_metrics_match_python_sets_on_random_logits():
    ref_rows, cand_rows = _random_logits(seed=1), _random_logits(seed=2)
    reference = torch.tensor(ref_rows, dtype=torch.float64)
    candidate = torch.tensor(cand_rows, dtype=torch.float64)
    for k in (1, 3, 5):
        overlap = sum(
            Fraction(len(_py_topk(r, k) & _py_topk(c, k)), k)
            for r, c in zip(ref_rows, cand_rows, strict=True)
        ) / len(ref_rows)
        hits = sum(
            _py_topk(r, 1) <= _py_topk(c, k) for r, c in zip(ref_rows, cand_rows, strict=True)
        )
        assert topk_overlap(reference, candidate, k) == pytest.approx(float(overlap), abs=1e-15)
        assert topk_agreement(reference, candidate, k) == hits / len(ref_rows)


def test_logit_sqnr_db_by_hand():
    reference = torch.tensor([[3.0, 4.0]])
    assert logit_sqnr_db(reference, torch.tensor([[3.0, 3.0]])) == 10 * math.log10(25.0)
    assert logit_sqnr_db(reference, torch.tensor([[2.0, 5.0]])) == 10 * math.log10(12.5)
    assert logit_sqnr_db(reference, reference) == math.inf
    assert logit_sqnr_db(torch.zeros(1, 2), reference) == -math.inf


def test_logit_sqnr_db_matches_float64_python_on_random_logits():
    ref_rows, cand_rows = _random_logits(seed=3), _random_logits(seed=4)
    signal = math.fsum(v * v for row in ref_rows for v in row)
    noise = math.fsum(
        (a - b) ** 2
        for r, c in zip(ref_rows, cand_rows, strict=True)
        for a, b in zip(r, c, strict=True)
    )
    got = logit_sqnr_db(torch.tensor(ref_rows), torch.tensor(cand_rows))
    # the tensors are float32: the inputs were rounded, so compare at float32 precision
    assert got == pytest.approx(10 * math.log10(signal / noise), rel=1e-5)


def test_kl_divergence_by_hand():
    reference = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)  # p = (1/4, 3/4)
    candidate = torch.tensor([[0.0, 0.0]], dtype=torch.float64)  # q = (1/2, 1/2)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert mean_kl_divergence(reference, candidate) == pytest.approx(expected, rel=1e-12)
    assert mean_kl_divergence(reference, reference) == 0.0
    # mean over samples; a per-row shift of the logits does not change the softmax
    both = torch.cat([reference, reference + 7.0])
    doubled = mean_kl_divergence(both, torch.cat([candidate, candidate - 3.0]))
    assert doubled == pytest.approx(expected, rel=1e-12)


def test_kl_divergence_is_never_negative_when_softmaxes_match():
    torch.manual_seed(19)
    reference = torch.randn(8, 10)
    # the same softmax: the unclamped float64 sum is -5.7e-20 here
    assert 0.0 <= mean_kl_divergence(reference, reference - 0.5) < 1e-15


def test_kl_divergence_matches_python_and_is_not_symmetric():
    ref_rows, cand_rows = _random_logits(rows=10, seed=5), _random_logits(rows=10, seed=6)

    def softmax(row):
        m = max(row)
        e = [math.exp(v - m) for v in row]
        return [v / math.fsum(e) for v in e]

    expected = math.fsum(
        math.fsum(p * math.log(p / q) for p, q in zip(softmax(r), softmax(c), strict=True))
        for r, c in zip(ref_rows, cand_rows, strict=True)
    ) / len(ref_rows)
    reference = torch.tensor(ref_rows, dtype=torch.float64)
    candidate = torch.tensor(cand_rows, dtype=torch.float64)
    assert mean_kl_divergence(reference, candidate) == pytest.approx(expected, rel=1e-12)
    assert mean_kl_divergence(candidate, reference) != pytest.approx(expected, rel=1e-3)


def test_confidence_and_histogram_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]], dtype=torch.float64)
    assert mean_max_softmax(logits) == pytest.approx((0.75 + 0.5) / 2, rel=1e-12)
    histogram = top1_histogram(LOGITS)
    assert list(histogram.items()) == [(0, 2), (1, 1), (2, 1)]
    assert list(top1_histogram(torch.tensor([[0.0, 1.0], [0.0, 2.0], [1.0, 0.0]])).items()) == [
        (1, 2),
        (0, 1),
    ]


def test_compare_logits_collects_every_metric():
    reference = torch.tensor(_random_logits(seed=7))
    candidate = reference + torch.tensor(_random_logits(seed=8)) * 0.1
    got = compare_logits(reference, candidate)
    assert got == LogitComparison(
        top1_agreement=top1_agreement(reference, candidate),
        top5_agreement=topk_agreement(reference, candidate, 5),
        top5_overlap=topk_overlap(reference, candidate, 5),
        sqnr_db=logit_sqnr_db(reference, candidate),
        kl_divergence=mean_kl_divergence(reference, candidate),
    )
    assert 0.8 < got.top1_agreement <= 1 and got.sqnr_db > 15 and got.kl_divergence > 0


@pytest.mark.parametrize(
    ("reference", "candidate", "message"),
    [
        (torch.zeros(2, 3), torch.zeros(3, 3), "differ in shape"),
        (torch.zeros(3), torch.zeros(3), r"non-empty float \(N, K\)"),
        (torch.zeros(0, 3), torch.zeros(0, 3), r"non-empty float \(N, K\)"),
        (torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3), "float"),
        (torch.tensor([[0.0, math.nan]]), torch.zeros(1, 2), "NaN or Inf"),
        (torch.zeros(1, 2), torch.tensor([[math.inf, 0.0]]), "NaN or Inf"),
    ],
)
def test_bad_logits_raise(reference, candidate, message):
    with pytest.raises(ValueError, match=message):
        top1_agreement(reference, candidate)


def test_k_larger_than_classes_raises():
    with pytest.raises(ValueError, match=r"k must lie in \[1, 3\]"):
        topk_overlap(LOGITS, LOGITS, k=5)
