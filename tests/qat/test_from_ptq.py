"""QAT from a PTQ graph: the prepared copy computes what the PTQ graph computes, weights and
biases get gradients (the int32 bias rounding passes them straight through), AdaRound's
weights stay on their grid, and distillation lowers the held-out KL."""

import copy

import torch
from torch import nn

from intq.adaptive_rounding import AdaRoundSettings, adaround
from intq.eval import mean_kl_divergence
from intq.graph.place import quant_layers
from intq.ptq import quantize
from intq.qat import FROM_PTQ_SCHEDULE, convert_qat, prepare_qat_from_ptq, train_qat
from intq.recipes import get_recipe

from .nets import trained_looking_net


def _data():
    g = torch.Generator().manual_seed(2)
    return torch.randn(256, 3, 12, 12, generator=g), torch.randn(128, 3, 12, 12, generator=g)


def test_the_prepared_copy_computes_the_ptq_graph_and_leaves_it_alone():
    torch.set_num_threads(1)
    teacher = trained_looking_net()
    x, held = _data()
    ptq = quantize(teacher, x[:64], "sym-per-channel-4", progress=False)
    before = copy.deepcopy(ptq.state_dict())
    qgm = prepare_qat_from_ptq(ptq)
    assert qgm.training and all("float_bias" not in k for k in qgm.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(qgm.eval()(held), ptq(held), rtol=0, atol=0)
    assert all(torch.equal(before[k], v) for k, v in ptq.state_dict().items())
    assert before.keys() == ptq.state_dict().keys()


def test_weights_and_biases_get_gradients():
    teacher = trained_looking_net()
    x, _ = _data()
    qgm = prepare_qat_from_ptq(quantize(teacher, x[:64], "sym-per-channel-8", progress=False))
    qgm(x[:8]).pow(2).sum().backward()
    for name, layer in quant_layers(qgm):
        assert layer.layer.weight.grad.abs().sum() > 0, name
        assert layer.layer.bias.grad.abs().sum() > 0, name


def test_adaround_weights_stay_on_their_grid():
    teacher = trained_looking_net()
    x, _ = _data()
    rounded = adaround(teacher, x[:32], "sym-per-channel-4", progress=False,
                       settings=AdaRoundSettings(iterations=20, images=32, check_every=5))
    qgm = prepare_qat_from_ptq(rounded)
    for name, layer in quant_layers(qgm):
        weight = layer.layer.weight.detach()
        assert torch.equal(layer.weight_quantizer(weight), weight), name


def _heldout_kl(teacher: nn.Module, lr: float, x: torch.Tensor, held: torch.Tensor,
                optimizer: str = "sgd", learn_scales: bool = False) -> float:
    recipe = get_recipe("sym-per-channel-4", w_bits=2)  # far from float, room to improve
    qgm = prepare_qat_from_ptq(quantize(teacher, x[:64], recipe, progress=False),
                               learn_weight_scales=learn_scales)
    train_qat(qgm, x, teacher=teacher, epochs=6, lr=lr, batch_size=32, seed=0,
              schedule=FROM_PTQ_SCHEDULE, optimizer=optimizer)
    with torch.no_grad():
        return mean_kl_divergence(teacher(held), convert_qat(qgm)(held))


def test_distillation_from_ptq_lowers_the_heldout_kl():
    """Same PTQ start and frozen ranges; only the weight updates differ (lr 0 vs > 0)."""
    torch.set_num_threads(1)
    teacher = trained_looking_net()
    x, held = _data()
    untrained = _heldout_kl(teacher, 1e-12, x, held)
    trained = _heldout_kl(teacher, 0.02, x, held)
    assert trained < 0.7 * untrained, (trained, untrained)


def test_adam_with_learned_weight_scales_lowers_the_heldout_kl():
    torch.set_num_threads(1)
    teacher = trained_looking_net()
    x, held = _data()
    untrained = _heldout_kl(teacher, 1e-12, x, held, "adam", learn_scales=True)
    trained = _heldout_kl(teacher, 1e-3, x, held, "adam", learn_scales=True)
    assert trained < 0.7 * untrained, (trained, untrained)


def test_learned_weight_scales_train_and_are_baked_into_the_converted_graph():
    teacher = trained_looking_net()
    x, held = _data()
    ptq = quantize(teacher, x[:64], "sym-per-channel-4", progress=False)
    qgm = prepare_qat_from_ptq(ptq, learn_weight_scales=True)
    with torch.no_grad():  # a zero log gain: the PTQ graph exactly
        torch.testing.assert_close(qgm.eval()(held), ptq(held), rtol=0, atol=0)
    train_qat(qgm, x, teacher=teacher, epochs=2, lr=1e-2, batch_size=32, seed=0,
              schedule=FROM_PTQ_SCHEDULE, optimizer="adam")
    converted = convert_qat(qgm)
    for (name, trained), (_, baked) in zip(quant_layers(qgm), quant_layers(converted),
                                           strict=True):
        gain = trained.weight_quantizer.scale_log_gain.detach()
        assert gain.abs().max() > 1e-3, name
        assert "scale_log_gain" not in dict(baked.weight_quantizer.named_parameters())
        torch.testing.assert_close(baked.weight_quantizer.scale,
                                   trained.weight_quantizer.scale * gain.exp())
    with torch.no_grad():
        torch.testing.assert_close(converted(held), qgm.eval()(held), rtol=1e-5, atol=1e-5)
