"""prepare_qat / convert_qat end to end: a zoo net trains, converts, and the reference
interpreter computes what the simulated model computes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from intq.convert.from_graph import convert_to_program
from intq.errors import IntqError
from intq.graph.fused import FusedConv2d
from intq.graph.place import activation_quantizers
from intq.graph.qmodules import QuantConv2d, QuantLinear
from intq.qat import QATConvBn2d, QATSchedule, apply_schedule, convert_qat, prepare_qat, qat_layers
from intq.recipes import get_recipe
from intq.runtime.reference import run_reference
from intq.zoo import load_model


def batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def train(qgm, x, y, steps: int, schedule: QATSchedule, lr: float = 0.05) -> list[float]:
    opt = torch.optim.SGD(qgm.parameters(), lr=lr, momentum=0.9)
    losses = []
    for step in range(steps):
        apply_schedule(qgm, schedule, step)
        loss = F.cross_entropy(qgm(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = load_model("mobilenet-v1-fmnist", pretrained=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = batch()
    qgm = prepare_qat(model, x[:2], "sym-per-channel-4")
    losses = train(qgm, x, y, 8, QATSchedule(bn_freeze_step=5, act_range_freeze_step=7))
    return model, before, qgm, losses, x


def test_layers_are_replaced_and_the_model_untouched(trained):
    model, before, qgm, _, _ = trained
    kinds = [type(m) for m in qgm.modules()]
    assert kinds.count(QATConvBn2d) == 9 and kinds.count(QuantLinear) == 1
    assert FusedConv2d not in kinds and nn.BatchNorm2d not in [type(m) for m in qgm.children()]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_few_training_steps_reduce_the_loss(trained):
    losses = trained[3]
    assert losses[4] < 0.9 * losses[0], losses


def test_reference_interpreter_agrees_with_the_converted_simulation(trained):
    _, _, qgm, _, x = trained
    deployable = convert_qat(qgm)
    assert not any(isinstance(m, QATConvBn2d) for m in deployable.modules())
    program = convert_to_program(deployable, (1, 28, 28))
    (ref,) = run_reference(program, x.numpy()).values()
    with torch.no_grad():
        simulated = deployable(x).numpy()
        qat_eval = qgm.eval()(x).numpy()
    qgm.train()
    assert program.ops[-1].requant is None  # the classifier writes float32 logits
    # float32(acc)·float32(S_x·S_w) vs the float simulation: float32 rounding only here
    # (no integer tensor differs), within 1e-6 of the largest logit (measured 2e-7)
    assert np.abs(ref - simulated).max() <= 1e-6 * np.abs(ref).max()
    np.testing.assert_allclose(qat_eval, simulated, rtol=0, atol=1e-5)


def test_model_without_batchnorm_gets_plain_quant_layers():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    x, y = batch(8)
    qgm = prepare_qat(net, x[:2])
    kinds = [type(m) for m in qgm.modules()]
    assert QATConvBn2d not in kinds and QuantConv2d in kinds
    assert all(layer.weight_quantizer.current_ranges
               for layer in qgm.modules() if isinstance(layer, QuantConv2d | QuantLinear))
    train(qgm, x, y, 2, QATSchedule())
    convert_to_program(convert_qat(qgm), (1, 28, 28))


def test_activation_quantizers_use_the_paper_ema():
    qgm = prepare_qat(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), torch.rand(2, 1, 5, 5),
                      get_recipe("sym-per-channel-8"))  # the recipe names percentile
    specs = {m.spec.observer: m.spec.options for m in qgm.act_q.children()}
    assert specs == {"ema": {"decay": 0.999}}


def test_keep_float_layer_keeps_its_batchnorm():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(),
                        nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2))
    recipe = get_recipe().with_override("3", keep_float=True)
    qgm = prepare_qat(net, torch.rand(2, 1, 8, 8), recipe)
    kept = qgm.get_submodule("3")
    assert isinstance(kept, FusedConv2d) and isinstance(kept.bn, nn.BatchNorm2d)
    assert isinstance(qgm.get_submodule("0"), QATConvBn2d)


def test_one_bit_recipe_is_refused_by_quantspec():
    with pytest.raises(ValueError, match="bits must be an integer in 2..16, got 1"):
        prepare_qat(nn.Conv2d(1, 1, 1), torch.rand(2, 1, 3, 3),
                    get_recipe("sym-per-channel-8", w_bits=1))


def test_convert_before_training_is_refused():
    qgm = prepare_qat(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), torch.rand(2, 1, 5, 5))
    with pytest.raises(IntqError, match="saw no data; train at least one step"):
        convert_qat(qgm)



def test_evaluating_mid_training_does_not_move_the_activation_ranges():
    torch.manual_seed(0)
    x, y = batch()
    qgm = prepare_qat(load_model("mobilenet-v1-fmnist", pretrained=False), x[:2],
                      "sym-per-channel-8")
    train(qgm, x, y, 2, QATSchedule())

    def activation_state():
        return {k: v.clone() for k, v in qgm.state_dict().items() if k.startswith("act_q.")}

    state = activation_state()
    assert state
    qgm.eval()
    with torch.no_grad():
        qgm(batch(seed=1)[0] * 5)  # other, larger inputs: would widen the activation ranges
    assert all(torch.equal(v, state[k]) for k, v in activation_state().items())
    qgm.train()
    train(qgm, x * 5, y, 1, QATSchedule())
    assert not all(torch.equal(v, state[k]) for k, v in activation_state().items())


def _restored(qgm):
    for _, layer in qat_layers(qgm):
        if isinstance(layer, QATConvBn2d):
            layer.restore_activation()
    return qgm


def test_activations_move_into_their_quantizers_without_changing_training():
    torch.manual_seed(0)
    model = load_model("mobilenet-v1-fmnist", pretrained=False)
    x, y = batch()
    fused = prepare_qat(model, x[:2], "sym-per-channel-8")
    plain = _restored(prepare_qat(model, x[:2], "sym-per-channel-8"))
    moved = [n for n, m in fused.named_modules() if isinstance(m, QATConvBn2d) and
             m.activation_moved]
    assert len(moved) == 9 and not any(m.input_clamp for _, m in activation_quantizers(plain))
    schedule = QATSchedule(bn_freeze_step=2, act_range_freeze_step=3)
    assert train(fused, x, y, 4, schedule) == train(plain, x, y, 4, schedule)
    plain_state = plain.state_dict()
    assert all(torch.equal(v, plain_state[k]) for k, v in fused.state_dict().items())
    converted = convert_qat(fused)
    assert not any(m.input_clamp for _, m in activation_quantizers(converted))
    assert all(m.activation_moved for n, m in fused.named_modules() if n in moved)
    assert torch.equal(converted.eval()(x), convert_qat(plain).eval()(x))


class _Branches(nn.Module):
    """Two conv -> BN -> ReLU branches concatenated: they share one activation quantizer."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU6())

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


def test_a_quantizer_shared_by_a_concat_keeps_the_activations_in_the_layers():
    qgm = prepare_qat(_Branches(), torch.rand(2, 1, 6, 6), "sym-per-channel-8")
    layers = [m for m in qgm.modules() if isinstance(m, QATConvBn2d)]
    assert len(layers) == 2 and not any(m.activation_moved for m in layers)
