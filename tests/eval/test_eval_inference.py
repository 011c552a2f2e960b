"""evaluate_model: batching gives the logits of one big forward pass; bad models are refused."""

import math

import pytest
import torch
from torch import nn

from intq.eval.inference import evaluate_model
from intq.zoo.dataset import Dataset


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(0)
    return Dataset("tiny", torch.randn(10, 1, 3, 3, generator=generator))


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(9, 4, dtype=torch.float64)).eval()


def test_batched_logits_equal_one_forward_pass(data):
    model = _model()
    expected = model(data.x.double()).detach()
    for batch_size in (1, 3, 10, 64):
        logits = evaluate_model(lambda x: model(x.double()), data, batch_size)
        assert logits.dtype == torch.float32 and logits.shape == (10, 4)
        torch.testing.assert_close(logits, expected.float(), rtol=0, atol=1e-6)


def test_no_progress_output_when_stderr_is_not_a_terminal(data, capsys):
    evaluate_model(lambda x: x.flatten(1), data, batch_size=2)
    assert capsys.readouterr() == ("", "")


def test_training_mode_and_bad_batch_size_are_refused(data):
    with pytest.raises(ValueError, match=r"training mode; call model.eval\(\)"):
        evaluate_model(_model().train(), data)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        evaluate_model(_model(), data, batch_size=0)


def test_outputs_that_are_not_logits_are_refused(data):
    with pytest.raises(ValueError, match=r"\(batch, classes\) logits, got \(3,\)"):
        evaluate_model(lambda x: x.flatten(1).sum(1), data, batch_size=3)
    with pytest.raises(ValueError, match=r"got tuple"):
        evaluate_model(lambda x: (x,), data)


def test_non_finite_logits_name_the_first_bad_sample(data):
    def model(x):
        out = x.flatten(1).clone()
        out[(x.flatten(1)[:, 0] > 0.5) & (x.flatten(1)[:, 1] < 0.5)] = math.nan
        return out

    flat = data.x.flatten(1)
    bad = ((flat[:, 0] > 0.5) & (flat[:, 1] < 0.5)).nonzero()
    assert len(bad) > 0, "fixture must contain a bad sample"
    with pytest.raises(ValueError, match=f"NaN or Inf logits on tiny \\(sample {bad[0, 0]}\\)"):
        evaluate_model(model, data, batch_size=4)
