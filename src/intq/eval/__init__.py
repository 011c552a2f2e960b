"""Evaluation: run models over datasets and measure accuracy and agreement of logits."""

from intq.eval.inference import evaluate_model
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

__all__ = [
    "LogitComparison",
    "compare_logits",
    "evaluate_model",
    "logit_sqnr_db",
    "mean_kl_divergence",
    "mean_max_softmax",
    "top1_accuracy",
    "top1_agreement",
    "top1_histogram",
    "topk_agreement",
    "topk_overlap",
]
