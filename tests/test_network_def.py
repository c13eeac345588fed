"""Checkpoints that know their network: model.json / checkpoint_last.pt's network_def, the mismatch
error and building the saved network (monai_hyperconv.bundle.network_def)."""

import json
import sys
from types import SimpleNamespace

import pytest
import torch

from monai_hyperconv.bundle import (
    BestModelSaver,
    CheckpointManager,
    NetworkDefMismatchError,
    load_weights,
    network_def_of,
    resolve_network,
    saved_network_def,
)
from monai_hyperconv.networks import create_network

MONAI_MAIN = "/venv/lib/python3/site-packages/monai/bundle/__main__.py"


def _net(channels=4, dropout=0.1):
    return create_network("hyper_unet", spatial_dims=2, in_channels=1, out_channels=1, channels=channels, num_pools=1,
                          kernel_size=3, conv=["hyper", {"n_l": 2}], dropout=dropout, norm="batch")


def _argv(monkeypatch, *configs):
    files = "[" + ",".join(f"'b/configs/{c}'" for c in configs) + "]"
    monkeypatch.setattr(sys, "argv", [MONAI_MAIN, "run", "--config_file", files, "--bundle_root", "b"])


def _save_best(tmp_path, net):
    saver = BestModelSaver(tmp_path / "models", net, metric_name="dice")
    saver(SimpleNamespace(state=SimpleNamespace(metrics={"dice": 0.5}, epoch=3)))
    return saver.path


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """model.pt of a 4-channel Hyper-UNet saved by a 'train.json + demo.json' run."""
    torch.manual_seed(0)
    net = _net(4).eval()
    _argv(monkeypatch, "train.json", "demo.json")
    return net, _save_best(tmp_path, net)


def test_model_pt_is_plain_state_dict_with_definition_beside_it(trained):
    from ignite.engine import Engine
    from monai.handlers import CheckpointLoader

    net, path = trained
    sd = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    other = _net(4)
    CheckpointLoader(str(path), {"model": other})(Engine(lambda e, b: None))  # MONAI's loader, strict
    assert all(torch.equal(other.state_dict()[k], v) for k, v in sd.items())
    info = json.loads(path.with_suffix(".json").read_text())
    d = info["network_def"]
    assert d["_target_"] == "monai_hyperconv.networks.create_network" and d["name"] == "hyper_unet"
    assert d["channels"] == 4 and d["conv"] == ["hyper", {"n_l": 2}]
    assert info["config_file"] == ["b/configs/train.json", "b/configs/demo.json"]
    assert info["best_epoch"] == 3
    assert saved_network_def(path) == d == network_def_of(net)


def test_mismatch_names_both_definitions_and_the_fix(trained, monkeypatch):
    _, path = trained
    _argv(monkeypatch, "train.json", "inference.json")
    with pytest.raises(NetworkDefMismatchError) as e:
        resolve_network(_net(8), path)
    msg = str(e.value)
    assert "channels: checkpoint 4, config 8" in msg
    assert "--network_def#channels 4" in msg
    assert "b/configs/demo.json" in msg  # the config file the training used and this run lacks
    assert "--use_saved_network_def true" in msg
    assert "stem." in msg  # a weight that does not fit
    with pytest.raises(NetworkDefMismatchError, match="channels: checkpoint 4, config 8"):
        load_weights(_net(8), path)  # export and the scale-space bundles load through this
    # an eval-neutral difference (dropout) does not stop inference
    assert resolve_network(_net(4, dropout=0.5), path) is not None


def test_use_saved_network_def_builds_the_trained_network(trained):
    net, path = trained
    built = resolve_network(_net(8), path, use_saved="true")
    assert network_def_of(built)["channels"] == 4
    built.load_state_dict(torch.load(path, weights_only=True))
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(built.eval()(x), net(x))


def test_use_saved_without_definition_is_a_clear_error(tmp_path):
    torch.save(_net(4).state_dict(), tmp_path / "old.pt")  # an older model.pt: no model.json
    with pytest.raises(ValueError, match="no saved network definition"):
        resolve_network(None, tmp_path / "old.pt", use_saved=True)
    with pytest.raises(NetworkDefMismatchError, match="does not say which network"):
        resolve_network(_net(8), tmp_path / "old.pt")


def test_last_checkpoint_holds_the_definition(tmp_path):
    net = _net(4)
    mgr = CheckpointManager(tmp_path, {"network": net}, trainer_key=None)
    path = mgr.save()
    assert torch.load(path, weights_only=True)["network_def"]["channels"] == 4
    assert saved_network_def(path)["channels"] == 4
    with pytest.raises(NetworkDefMismatchError, match="--network_def#channels 4"):
        CheckpointManager(tmp_path, {"network": _net(8)}, trainer_key=None).load()
    assert resolve_network(None, path, use_saved=True).state_dict().keys() == net.state_dict().keys()
