"""Model specs: zoo names, FILE.py:FACTORY and package.module:FACTORY; weights files loaded
without unpickling code, and one-line errors that say what was wrong."""

import textwrap

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from intq.errors import IntqError
from intq.modelspec import (
    apply_state_dict,
    load_factory,
    load_model_spec,
    read_state_dict,
    spec_label,
)
from intq.zoo.registry import get_zoo_model

MODEL_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn


    def build():
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(3))


    def small():
        return nn.Linear(4, 2)


    def broken():
        raise RuntimeError("needs a GPU\\nsecond line")


    def not_a_model():
        return 42


    NOT_CALLABLE = 3
    """
)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "nets.py"
    path.write_text(MODEL_SOURCE)
    return path


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(IntqError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_zoo_name_gives_the_entry_and_random_init_with_weights(tmp_path):
    torch.manual_seed(0)
    reference = get_zoo_model("mobilenet-v1-fmnist").build()
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, weights)
    loaded = load_model_spec("mobilenet-v1-fmnist", weights=weights)
    assert loaded.label == "mobilenet-v1-fmnist" and loaded.weights == str(weights)
    assert loaded.input_shape == (1, 28, 28) and loaded.dataset == "fashion-mnist"
    assert not loaded.model.training
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)


def test_file_factory(model_file):
    loaded = load_model_spec(f"{model_file}:small")
    assert isinstance(loaded.model, nn.Linear) and not loaded.model.training
    assert loaded.label == "nets" and loaded.weights == "factory"
    assert loaded.input_shape is None and loaded.dataset is None and loaded.zoo is None


def test_module_factory(model_file, monkeypatch):
    monkeypatch.syspath_prepend(str(model_file.parent))
    assert isinstance(load_factory("nets:small"), nn.Linear)
    assert spec_label("nets:small") == "small"
    assert spec_label("a.b.c:make") == "make" and spec_label("dir/x.py:f") == "x"


def test_factory_errors_are_one_line(model_file, tmp_path):
    spec = f"{model_file}:broken"
    assert _error(load_factory, spec) == f"model factory {spec} raised RuntimeError: needs a GPU"
    err = _error(load_factory, f"{model_file}:not_a_model")
    assert err.endswith("returned int, not a torch.nn.Module")
    assert "has no factory 'missing'" in _error(load_factory, f"{model_file}:missing")
    assert "non-callable factory" in _error(load_factory, f"{model_file}:NOT_CALLABLE")
    assert "does not exist" in _error(load_factory, f"{tmp_path}/none.py:build")
    (tmp_path / "notes.txt").write_text("hello")
    assert "not a Python file" in _error(load_factory, f"{tmp_path / 'notes.txt'}:build")
    (tmp_path / "syntax.py").write_text("def build(:\n")
    assert "failed to load: SyntaxError" in _error(load_factory, f"{tmp_path / 'syntax.py'}:b")
    assert "cannot import model module" in _error(load_factory, "no_such_module_xyz:build")
    assert "give a zoo name" in _error(load_model_spec, "resnet50")


def _small_state(**extra):
    torch.manual_seed(1)
    return {**nn.Linear(4, 2).state_dict(), **extra}


def test_state_dicts_from_safetensors_torch_and_checkpoints(tmp_path):
    state = _small_state()
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pt")
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pt")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pt")
    for name in ("w.safetensors", "w.pt", "ckpt.pt", "dp.pt"):
        loaded = read_state_dict(tmp_path / name)
        assert loaded.keys() == state.keys(), name
        assert all(torch.equal(loaded[k], state[k]) for k in state), name


def test_pickles_that_need_code_are_refused(tmp_path):
    torch.save(nn.Linear(4, 2), tmp_path / "module.pt")
    err = _error(read_state_dict, tmp_path / "module.pt")
    assert err.startswith(f"refusing to unpickle {tmp_path / 'module.pt'}: it needs code ")
    assert "torch.nn.modules.linear.Linear" in err
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    assert "neither safetensors nor a torch state dict" in _error(
        read_state_dict, tmp_path / "junk.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    assert "not a valid safetensors file" in _error(read_state_dict,
                                                    tmp_path / "junk.safetensors")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    assert "holds no state dict" in _error(read_state_dict, tmp_path / "list.pt")
    assert "does not exist" in _error(read_state_dict, tmp_path / "none.pt")


def test_mismatched_weights_are_summarized():
    model = nn.Linear(4, 2)
    wrong = {"weight": torch.zeros(3, 4), "extra.a": torch.zeros(1), "extra.b": torch.zeros(1)}
    err = _error(apply_state_dict, model, wrong, "weights file w.pt")
    assert err == (
        "weights file w.pt does not fit the model (a different architecture?): "
        "1 missing tensor (bias); 2 unexpected tensors (extra.a, extra.b); "
        "1 shape mismatch (file vs model) (weight (3, 4) vs (2, 4))"
    )
    many = {f"t{i}": torch.zeros(1) for i in range(5)}
    assert "5 unexpected tensors (t0, t1, t2, ...)" in _error(
        apply_state_dict, model, {**model.state_dict(), **many}, "w")


def test_zoo_model_with_weights_of_another_architecture(tmp_path):
    other = get_zoo_model("resnet-fmnist").build()
    weights = tmp_path / "o.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, weights)
    err = _error(load_model_spec, "mobilenet-v1-fmnist", weights=weights)
    assert "does not fit the model" in err and "missing tensors" in err
