"""Accuracy and agreement metrics on logits: a model vs labels, or a candidate vs a reference.

Logits are ``(N, K)`` float tensors (N samples, K classes); every metric is a mean over the
N samples, computed in float64. "Top-1" is the first index of the largest logit (argmax).
"""

import math
from dataclasses import dataclass

import torch

__all__ = [
    "LogitComparison",
    "compare_logits",
    "logit_sqnr_db",
    "mean_kl_divergence",
    "mean_max_softmax",
    "top1_accuracy",
    "top1_agreement",
    "top1_histogram",
    "topk_agreement",
    "topk_overlap",
]


@dataclass(frozen=True)
class LogitComparison:
    """How closely ``candidate`` logits (e.g. integer model) follow ``reference`` (float)."""

    top1_agreement: float
    top5_agreement: float
    top5_overlap: float
    sqnr_db: float
    kl_divergence: float


def top1_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of samples whose argmax equals the label."""
    _check_logits(logits, "logits")
    if labels.shape != (len(logits),) or labels.dtype.is_floating_point:
        raise ValueError(
            f"labels must be integers of shape ({len(logits)},), "
            f"got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(
            f"labels must lie in [0, {logits.shape[1]}), got [{labels.min()}, {labels.max()}]"
        )
    return (logits.argmax(dim=1) == labels).double().mean().item()


def top1_agreement(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """Fraction of samples on which both argmaxes are the same class."""
    _check_pair(reference, candidate)
    return (reference.argmax(dim=1) == candidate.argmax(dim=1)).double().mean().item()


def topk_agreement(reference: torch.Tensor, candidate: torch.Tensor, k: int = 5) -> float:
    """Fraction of samples whose reference top-1 class is among the candidate's top ``k``."""
    _check_pair(reference, candidate, k)
    top1 = reference.argmax(dim=1, keepdim=True)
    return (candidate.topk(k, dim=1).indices == top1).any(dim=1).double().mean().item()


def topk_overlap(reference: torch.Tensor, candidate: torch.Tensor, k: int = 5) -> float:
    """Mean of ``|top_k(reference) ∩ top_k(candidate)| / k`` (sets of class indices)."""
    _check_pair(reference, candidate, k)
    ref_k = reference.topk(k, dim=1).indices
    cand_k = candidate.topk(k, dim=1).indices
    shared = (ref_k[:, :, None] == cand_k[:, None, :]).any(dim=2).sum(dim=1)
    return (shared.double() / k).mean().item()


def logit_sqnr_db(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """``10·log10(Σ reference² / Σ (reference - candidate)²)`` in dB; ``inf`` when equal."""
    _check_pair(reference, candidate)
    ref = reference.double()
    noise = (ref - candidate.double()).square().sum().item()
    signal = ref.square().sum().item()
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def mean_kl_divergence(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """Mean over samples of ``KL(p || q) = Σ_k p_k (log p_k - log q_k)`` (nats), with
    ``p = softmax(reference)`` and ``q = softmax(candidate)``; each sample's KL is clamped
    at 0 (rounding can leave about -1e-17 where p = q, printed as -0.0000)."""
    _check_pair(reference, candidate)
    log_p = torch.log_softmax(reference.double(), dim=1)
    log_q = torch.log_softmax(candidate.double(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).clamp_min(0.0).mean().item()


def mean_max_softmax(logits: torch.Tensor) -> float:
    """Mean over samples of the largest softmax probability (the model's confidence)."""
    _check_logits(logits, "logits")
    return torch.softmax(logits.double(), dim=1).amax(dim=1).mean().item()


def top1_histogram(logits: torch.Tensor) -> dict[int, int]:
    """``{class: number of samples whose argmax is that class}``, most frequent first
    (ties by class index), only classes that occur."""
    _check_logits(logits, "logits")
    counts = torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1]).tolist()
    ranked = sorted((-count, label) for label, count in enumerate(counts) if count)
    return {label: -neg_count for neg_count, label in ranked}


def compare_logits(reference: torch.Tensor, candidate: torch.Tensor) -> LogitComparison:
    """All agreement metrics of ``candidate`` against ``reference`` (top-5 needs K >= 5)."""
    return LogitComparison(
        top1_agreement=top1_agreement(reference, candidate),
        top5_agreement=topk_agreement(reference, candidate, 5),
        top5_overlap=topk_overlap(reference, candidate, 5),
        sqnr_db=logit_sqnr_db(reference, candidate),
        kl_divergence=mean_kl_divergence(reference, candidate),
    )


def _check_logits(logits: torch.Tensor, what: str) -> None:
    if logits.dim() != 2 or logits.shape[0] == 0 or not logits.dtype.is_floating_point:
        raise ValueError(
            f"{what} must be a non-empty float (N, K) tensor, "
            f"got {logits.dtype} of shape {tuple(logits.shape)}"
        )
    if not torch.isfinite(logits).all():
        raise ValueError(f"{what} hold NaN or Inf values")


def _check_pair(reference: torch.Tensor, candidate: torch.Tensor, k: int = 1) -> None:
    _check_logits(reference, "reference logits")
    _check_logits(candidate, "candidate logits")
    if reference.shape != candidate.shape:
        raise ValueError(
            f"reference logits {tuple(reference.shape)} and candidate logits "
            f"{tuple(candidate.shape)} differ in shape"
        )
    if not 1 <= k <= reference.shape[1]:
        raise ValueError(f"k must lie in [1, {reference.shape[1]}] (classes), got {k}")
