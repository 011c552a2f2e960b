"""``intq zoo`` and ``intq train`` through the CLI entry point: output, files, exit codes."""

import json

import pytest
import torch

import intq.cli
from intq.zoo import MODEL_ZOO, evaluate_accuracy, load_fashion_mnist, load_weights


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the 2 shared cores make more threads slower, not faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_zoo_json_lists_every_model_with_its_size_and_accuracy(capsys):
    assert intq.cli.main(["zoo", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == list(MODEL_ZOO)
    for name, entry in MODEL_ZOO.items():
        params = sum(p.numel() for p in entry.build().parameters())
        assert rows[name]["params"] == params
        assert rows[name]["input_shape"] == list(entry.input_shape)
        assert rows[name]["float_accuracy"] == entry.float_accuracy
    lite0 = rows["efficientnet-lite0"]
    assert (lite0["float_accuracy"], lite0["weights"]) == (0.751, "published")
    assert lite0["float32_bytes"] > 4 * lite0["params"]  # plus BN running statistics


def test_zoo_table_names_every_model(capsys):
    assert intq.cli.main(["zoo"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in MODEL_ZOO)


def test_train_writes_loadable_safetensors_and_reports_its_accuracy(tmp_path, capsys):
    out = tmp_path / "v1.safetensors"
    argv = ["train", "mobilenet-v1-fmnist", "--epochs", "1", "--subset", "256"]
    assert intq.cli.main([*argv, "--seed", "3", "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["epochs"], summary["seed"], summary["test_images"]) == (1, 3, 256)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1.safetensors"]
    model = load_weights(MODEL_ZOO["mobilenet-v1-fmnist"].build(), out).eval()
    test = load_fashion_mnist("test").head(256)
    assert evaluate_accuracy(model, test) == summary["test_accuracy"]


def test_train_refuses_the_imagenet_model(capsys):
    assert intq.cli.main(["train", "efficientnet-lite0"]) == 1
    err = capsys.readouterr().err
    assert "cannot be trained here" in err and "resnet-fmnist" in err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["train", "lenet"], 1, "unknown model 'lenet'"),
        (["train", "resnet-fmnist", "--epochs", "0"], 2, "must be > 0"),
        (["train", "resnet-fmnist", "--lr", "fast"], 2, "not a number"),
        (["train", "resnet-fmnist", "-o", "w.pt"], 2, "must end in .safetensors"),
    ],
)
def test_train_errors_are_one_line(argv, code, message, capsys):
    assert intq.cli.main(argv) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
