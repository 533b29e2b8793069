"""Tests for dpaat_lib.models (method.md section 2): every registered CNN on tiny inputs."""
from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from dpaat_lib import models
from dpaat_lib.models import (PAPER_MODELS, Normalized, build_model, gradcam_target_layer, head, list_models,
                              min_input_size)
from fakes import write_model_module

ALL = list_models()


def _side(name: str) -> int:
    return max(min_input_size(name), 32) if name != "smallcnn" else 16


def _first_conv(net: nn.Module) -> tuple[str, nn.Conv2d]:
    return next((k, m) for k, m in net.named_modules() if isinstance(m, nn.Conv2d))


def test_registry_holds_the_six_paper_models_then_smallcnn_then_the_others():
    assert ALL[:6] == list(PAPER_MODELS)
    assert ALL[6:] == ["smallcnn", *models.OTHER_MODELS]
    assert set(models.GROUPS["all_six"]) == set(models.GROUPS["widely_used"]) | set(models.GROUPS["lightweight"])
    assert min_input_size("inception_v3") == 75


@pytest.mark.parametrize("name", ALL)
def test_builds_runs_forward_and_backward(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=3)
    assert isinstance(model, Normalized)
    model.train()
    x = torch.rand(2, 3, _side(name), _side(name))
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    no_grad = [k for k, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"{name}: parameters without gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    # Normalisation lives in buffers, not parameters: attacks work in [0, 1] pixel space.
    assert {"mean", "std"} <= {k for k, _ in model.named_buffers()}
    assert head(model, name).weight.shape[0] == 3


@pytest.mark.parametrize("name", ["smallcnn", "mobilenet_v2"])
def test_normalisation_is_inside_the_model(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.rand(2, 3, _side(name), _side(name))
    mean = torch.tensor(models.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(models.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net((x - mean) / std))


def test_num_classes():
    assert build_model("smallcnn", num_classes=7)(torch.rand(2, 3, 16, 16)).shape == (2, 7)


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 4, 32, 32), (3, 32, 32)])
def test_images_of_another_channel_count_are_refused_with_the_fix(shape):
    """A grey (N, 1, H, W) batch would broadcast to three channels and meet an L2 radius sqrt(3) times larger."""
    with pytest.raises(ValueError, match=r"takes images \(N, 3, H, W\), got shape .*x\.expand\(-1, 3, -1, -1\)"):
        build_model("smallcnn")(torch.rand(*shape))


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_model("resnet1000")
    msg = str(err.value)
    assert "resnet1000" in msg
    for name in ALL:
        assert name in msg
    for fn in (min_input_size, lambda n: gradcam_target_layer(nn.Identity(), n)):
        with pytest.raises(ValueError, match="unknown model"):
            fn("vgg16")


@pytest.mark.parametrize("name", ALL)
def test_gradcam_target_layer_is_a_conv_block_of_the_model(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    layer = gradcam_target_layer(model, name)
    assert isinstance(layer, nn.Module)
    assert any(m is layer for m in model.modules())
    assert layer is not model and layer is not model.net
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model(torch.rand(2, 3, _side(name), _side(name)))
    handle.remove()
    assert len(seen) == 1 and seen[0].dim() == 4 and seen[0].shape[0] == 2  # a spatial feature map


# --------------------------------------------------------------------------
# Local weight files
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["smallcnn", "mobilenet_v2", "squeezenet1_1", "resnet34"])
def test_weights_load_backbone_and_keep_a_fresh_head(tmp_path, name):
    torch.manual_seed(1)
    donor = build_model(name, num_classes=5).net  # e.g. ImageNet's 1000 classes: another head size
    path = tmp_path / f"{name}.pt"
    torch.save(donor.state_dict(), path)
    torch.manual_seed(2)
    model = build_model(name, num_classes=3, weights=path)
    key, conv = _first_conv(model.net)
    assert torch.equal(conv.weight, dict(donor.named_modules())[key].weight)
    # Every backbone tensor came from the file (BatchNorm statistics included)...
    donor_state = donor.state_dict()
    head_prefix = next(p for p, m in model.net.named_modules() if m is head(model, name)) + "."
    backbone = [k for k in model.net.state_dict() if not k.startswith(head_prefix)]
    assert len(backbone) > 2
    for k in backbone:
        assert torch.equal(model.net.state_dict()[k], donor_state[k]), k
    # ... and the head is a fresh 3-way one.
    assert head(model, name).weight.shape[0] == 3
    assert model(torch.rand(2, 3, _side(name), _side(name))).shape == (2, 3)


def test_weights_head_is_freshly_initialised(tmp_path):
    torch.manual_seed(1)
    donor = build_model("smallcnn", num_classes=3).net  # same head size: its head must still be dropped
    path = tmp_path / "same_head.pt"
    torch.save(donor.state_dict(), path)
    torch.manual_seed(2)
    model = build_model("smallcnn", num_classes=3, weights=path)
    assert not torch.equal(head(model, "smallcnn").weight, donor.classifier[2].weight)
    assert torch.equal(model.net.features[0].weight, donor.features[0].weight)


def test_inception_weights_with_aux_head_load(tmp_path):
    """torchvision's ImageNet InceptionV3 file carries the auxiliary head; ours has none."""
    torch.manual_seed(0)
    donor = torchvision.models.inception_v3(weights=None, num_classes=10, aux_logits=True, init_weights=False)
    path = tmp_path / "inception.pt"
    torch.save(donor.state_dict(), path)
    model = build_model("inception_v3", num_classes=3, weights=path)
    assert torch.equal(model.net.Conv2d_1a_3x3.conv.weight, donor.Conv2d_1a_3x3.conv.weight)
    assert model.net.fc.out_features == 3


@pytest.mark.parametrize("donor_name, name", [("resnet34", "smallcnn"), ("smallcnn", "mobilenet_v2")])
def test_weights_of_another_architecture_raise(tmp_path, donor_name, name):
    path = tmp_path / "wrong.pt"
    torch.save(build_model(donor_name).net.state_dict(), path)
    with pytest.raises(ValueError, match=f"does not match {name}"):
        build_model(name, weights=path)


def test_weights_of_another_width_raise(tmp_path):
    path = tmp_path / "narrow.pt"
    torch.save(models.SmallCNN(num_classes=3, width=8).state_dict(), path)
    with pytest.raises(ValueError, match="does not match smallcnn"):
        build_model("smallcnn", weights=path)


def test_missing_weights_file_raises(tmp_path):
    path = tmp_path / "nowhere.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))) as err:
        build_model("mobilenet_v2", weights=path)
    assert "mobilenet_v2" in str(err.value) and "{name}" not in str(err.value)


def _tiny_cnn(n: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 3, padding=1)),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, n))


def test_a_registered_cnn_is_built_trained_and_read_by_grad_cam_like_the_others(monkeypatch):
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))  # this test's registration only
    models.register_model("tiny", _tiny_cnn, head="5", gradcam_layer="2", min_size=8)
    assert "tiny" in list_models() and min_input_size("tiny") == 8
    model = build_model("tiny", num_classes=7)
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 7) and head(model, "tiny").out_features == 7
    assert gradcam_target_layer(model, "tiny") is model.net[2]
    with pytest.raises(ValueError, match="needs >= 8 px"):
        models.check_input_size("tiny", 4)


@pytest.mark.parametrize("name, head_path, cam, match", [
    ("tiny", "9", "2", "attribute paths"),        # no such layer
    ("tiny", "0", "2", "not the layer with num_classes outputs"),
    ("resnet34", "fc", "layer4", "give a new name"),  # a built-in name: run ids would mean two networks
    ("", "5", "2", "give a new name"),
])
def test_register_model_refuses_what_would_fail_later(monkeypatch, name, head_path, cam, match):
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    with pytest.raises(ValueError, match=match):
        models.register_model(name, _tiny_cnn, head=head_path, gradcam_layer=cam)


@pytest.fixture
def own_registry(monkeypatch, tmp_path):
    """models' registry and module bookkeeping restored after the test, and the modules it imported forgotten."""
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    monkeypatch.setattr(models, "_REGISTERED_BY", {})
    monkeypatch.setattr(models, "_LOADED_MODULES", set())
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("my_cnns", "empty_cnns"):  # written into this tmp_path: another test's module of that name differs
        sys.modules.pop(name, None)


def test_a_module_named_in_dpaat_models_registers_its_cnns_on_first_use(own_registry, monkeypatch):
    env = write_model_module(own_registry)
    assert "plugcnn" not in models._REGISTRY  # nothing is imported before a name is needed
    monkeypatch.setenv("DPAAT_MODELS", f" {env['DPAAT_MODELS']} ,")  # spaces and a trailing comma are fine
    assert build_model("plugcnn", num_classes=5)(torch.rand(2, 3, 8, 8)).shape == (2, 5)
    assert list_models()[-1] == "plugcnn" and models.registered_by("plugcnn") == "my_cnns"
    assert models.registered_by("resnet34") is None
    assert list_models().count("plugcnn") == 1  # imported once per process


def test_dpaat_models_naming_a_missing_or_empty_module_says_which_and_how_to_fix(own_registry, monkeypatch):
    monkeypatch.setenv("DPAAT_MODELS", "no_such_cnns")
    with pytest.raises(ImportError, match="DPAAT_MODELS names module 'no_such_cnns'.*PYTHONPATH"):
        list_models()
    (own_registry / "empty_cnns.py").write_text("x = 1\n")
    importlib.invalidate_caches()  # the folder was listed before the file existed
    monkeypatch.setenv("DPAAT_MODELS", "empty_cnns")
    with pytest.raises(ValueError, match="'empty_cnns', whose import registered no model.*register_model"):
        build_model("vgg11_bn")  # a built-in name imports nothing; an unknown one loads the modules first


def test_an_unknown_name_tells_how_to_register_it(own_registry):
    with pytest.raises(ValueError, match=r"unknown model 'vgg11_bn'.*register_model.*\$DPAAT_MODELS"):
        build_model("vgg11_bn")


def test_the_dpaat_command_knows_the_cnns_of_dpaat_models_and_reports_a_bad_module(tmp_path):
    env = {**os.environ, **write_model_module(tmp_path)}
    listed = subprocess.run([sys.executable, "-m", "dpaat_lib", "models"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0 and listed.stdout.split()[-1] == "plugcnn", listed.stderr
    bad = subprocess.run([sys.executable, "-m", "dpaat_lib", "models"], capture_output=True, text=True,
                         env={**env, "DPAAT_MODELS": "no_such_cnns"})
    assert bad.returncode == 2 and "dpaat: error: DPAAT_MODELS names module 'no_such_cnns'" in bad.stderr
    assert "Traceback" not in bad.stderr
