"""Tests for dpaat_lib.pretrained (method.md sections 2 and 6): where a run's starting weights come from, how its
identity records them, and the two-phase fine-tuning they switch on. No network: torchvision's download is
replaced by a local writer."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision

from dpaat_lib import experiment, pretrained, profiles, report, store
from dpaat_lib.models import PAPER_MODELS, SmallCNN, build_model
from test_training import tiny_config, tiny_profile


@pytest.fixture(scope="module")
def data(synthetic_root):
    return experiment.resolve_data(profiles.data_config(tiny_profile()), synthetic_root)


@pytest.fixture
def weights_folder(tmp_path):
    """A folder with an "ImageNet" smallcnn: a 10-class state dict, seeded."""
    torch.manual_seed(0)
    torch.save(SmallCNN(num_classes=10).state_dict(), tmp_path / "smallcnn.pth")
    return tmp_path


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """torch's hub cache in tmp_path, and a download that writes a state dict there (the count in .calls)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        torch.save({"w": torch.zeros(1)}, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    fake_download.calls = calls
    return fake_download


def test_imagenet_names_torchvisions_weights_of_each_paper_cnn_and_refuses_one_without(data):
    cfgs = [profiles.run_config(profiles.get_profile("paper"), m, "std", 0, data) for m in PAPER_MODELS]
    named, files = pretrained.configure(cfgs, "imagenet")
    assert files == {} and [c.train.weights for c in named] == [
        "torchvision:ResNet34_Weights.IMAGENET1K_V1", "torchvision:Inception_V3_Weights.IMAGENET1K_V1",
        "torchvision:DenseNet121_Weights.IMAGENET1K_V1", "torchvision:MobileNet_V2_Weights.IMAGENET1K_V2",
        "torchvision:ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1", "torchvision:SqueezeNet1_1_Weights.IMAGENET1K_V1"]
    assert len({c.run_id for c in named} | {c.run_id for c in cfgs}) == 12  # the weights are in the identity
    assert pretrained.configure(cfgs, None) == (cfgs, {})  # from scratch: run ids unchanged
    with pytest.raises(ValueError, match="smallcnn has no ImageNet weights in torchvision.*<model>.pth"):
        pretrained.configure([tiny_config(data)], "imagenet")


def test_a_folder_or_a_file_is_recorded_by_content_and_a_missing_one_is_named(data, weights_folder, tmp_path):
    cfg = tiny_config(data)
    [named], files = pretrained.configure([cfg], weights_folder)
    assert files == {"smallcnn": weights_folder / "smallcnn.pth"}
    assert named.train.weights == pretrained.weights_digest(weights_folder / "smallcnn.pth")
    assert named.train.weights.startswith("sha256:") and named.run_id != cfg.run_id
    assert pretrained.configure([cfg], weights_folder / "smallcnn.pth")[0] == [named]  # the file itself: the same
    with pytest.raises(FileNotFoundError, match=r"has no resnet34\.pth.*found \['smallcnn.pth'\]"):
        pretrained.configure([dataclasses.replace(cfg, model="resnet34")], weights_folder)
    with pytest.raises(FileNotFoundError, match="neither 'imagenet', nor a folder"):
        pretrained.configure([cfg], tmp_path / "nowhere")
    torch.save(SmallCNN(num_classes=10).state_dict(), weights_folder / "smallcnn.pth")  # other content
    assert pretrained.configure([cfg], weights_folder)[0][0].train.weights != named.train.weights


def test_torchvision_weights_are_downloaded_once_into_the_hub_cache_with_their_hash_checked(hub, data):
    cfg = dataclasses.replace(tiny_config(data), model="resnet34")
    [named], _ = pretrained.configure([cfg], "imagenet")
    path = pretrained.weights_file(named)
    assert path.name == "resnet34-b627a593.pth" and path.parent.name == "checkpoints" and path.is_file()
    assert pretrained.weights_file(named) == path
    assert hub.calls == [("https://download.pytorch.org/models/resnet34-b627a593.pth", "b627a593")]


def test_a_failed_download_says_where_to_put_the_file(hub, monkeypatch, data):
    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    [named], _ = pretrained.configure([dataclasses.replace(tiny_config(data), model="mobilenet_v2")], "imagenet")
    with pytest.raises(FileNotFoundError, match=r"could not download .*mobilenet_v2-7ebf99e0\.pth.*Network is "
                                                r"unreachable.*put it at .*hub/checkpoints/mobilenet_v2-7ebf99e0"):
        pretrained.weights_file(named)


def test_weights_file_refuses_a_file_the_identity_does_not_record(data, weights_folder, tmp_path):
    cfg = tiny_config(data)
    with pytest.raises(ValueError, match="weights_path given but config.train.weights is None"):
        pretrained.weights_file(cfg, weights_folder / "smallcnn.pth")
    [named], files = pretrained.configure([cfg], weights_folder)
    assert pretrained.weights_file(named, files) == weights_folder / "smallcnn.pth"
    torch.save(SmallCNN(num_classes=10).state_dict(), tmp_path / "other.pth")
    for wrong in (None, tmp_path / "other.pth"):
        with pytest.raises(ValueError, match="fine-tunes from weights sha256:.*digest must match"):
            pretrained.weights_file(named, wrong)


def test_inception_fine_tunes_with_the_input_scaling_of_torchvisions_weights_and_keeps_it(tmp_path):
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(),
               tmp_path / "inception_v3.pth")
    tuned = build_model("inception_v3", weights=tmp_path / "inception_v3.pth")
    assert tuned.mean.flatten().tolist() == [0.5] * 3 and tuned.std.flatten().tolist() == [0.5] * 3
    reloaded = build_model("inception_v3")  # how a kept checkpoint is loaded: without the weights file
    reloaded.load_state_dict(tuned.state_dict())
    assert reloaded.mean.flatten().tolist() == [0.5] * 3
    assert build_model("resnet34").mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])


def test_a_run_with_weights_trains_the_head_alone_first_then_every_layer(tmp_path, data, weights_folder,
                                                                      synthetic_root, cache_dir):
    prof = tiny_profile(epochs=1)
    [cfg], files = pretrained.configure([tiny_config(data, "std", prof=prof)], weights_folder)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, head_epochs=2))
    kw = dict(results=tmp_path, data_root=synthetic_root, cache_dir=cache_dir, progress=False)
    start = torch.load(weights_folder / "smallcnn.pth", weights_only=True)
    assert experiment.run(cfg, time_budget_s=0, weights_path=files, **kw) is None  # one epoch, then stop
    after_head = torch.load(store.RunDir(tmp_path, cfg.run_id).ckpt / "last.pt", weights_only=True)["model"]
    convs = [k for k in start if k.startswith("features.") and k.endswith(".weight") and start[k].dim() == 4]
    assert convs and all(torch.equal(after_head[f"net.{k}"], start[k]) for k in convs)  # the body: frozen
    done = experiment.run(cfg, weights_path=files, **kw)
    assert [e["phase"] for e in done.history["epochs"]] == ["head", "head", "all"]
    kept = torch.load(store.RunDir(tmp_path, cfg.run_id).ckpt / "last.pt", weights_only=True)["model"]
    assert not all(torch.equal(kept[f"net.{k}"], start[k]) for k in convs)  # then every layer trains
    assert experiment.run(cfg, **kw).run_id == cfg.run_id  # a stored run loads without its weights file


def test_a_page_fine_tunes_when_given_weights_and_says_so(tmp_path, weights_folder, synthetic_root, cache_dir):
    kw = dict(data_root=synthetic_root, results_root=tmp_path, methods=("std",), epochs=1, cache_dir=cache_dir,
              n_train=20, n_val=4, n_test=8, image_size=16, train_steps=2)
    prof, [scratch] = report.load_grid("quick", **kw)
    prof, [tuned] = report.load_grid("quick", weights=str(weights_folder), **kw)
    assert tuned.config.train.weights.startswith("sha256:") and tuned.run_id != scratch.run_id
    assert [e["phase"] for e in tuned.history["epochs"]][:1] == ["head"]
    shown = report.profile_banner(prof, [tuned]).data
    assert f"fine-tuned from a local weights file ({tuned.config.train.weights}): 10 epochs of the head alone" in shown
    assert "fine-tuned" not in report.profile_banner(prof, [scratch]).data
    assert "- **Initialisation**: two-phase, as the paper: fine-tuned from a local" in report.deviations(prof, [tuned])
    assert "- **Initialisation**: training from scratch" in report.deviations(prof, [scratch])


def test_the_command_takes_imagenet_a_folder_or_a_file_and_refuses_what_cannot_work(capsys, tmp_path):
    from dpaat_lib import cli

    assert cli.main(["train", "--profile", "quick", "--model", "smallcnn", "--method", "std", "--weights",
                     "imagenet", "--results", str(tmp_path), "--plan"]) == 2
    assert "dpaat: error: smallcnn has no ImageNet weights in torchvision" in capsys.readouterr().err
    plans = []
    for extra in ([], ["--weights", "imagenet"]):
        assert cli.main(["train", "--profile", "quick", "--model", "resnet34", "--method", "std", "--results",
                         str(tmp_path), "--plan", *extra]) == 0
        plans.append(next(w for w in capsys.readouterr().out.split() if w.startswith("resnet34-std-s0-")))
    assert plans[0] != plans[1]  # the weights are part of the run's identity


def test_chapter_12s_sweeps_and_their_yardsticks_fine_tune_when_given_weights(tmp_path, weights_folder,
                                                                            synthetic_root, cache_dir):
    """Chapter 12 passes its weights parameter to the sweeps as to its other grids: every sweep point and
    yardstick (AT, the default DPAAT) then starts from the weights, as runs of their own beside those from
    scratch."""
    from dpaat_lib import study

    kw = dict(data_root=synthetic_root, results_root=tmp_path / "r", epochs=1, cache_dir=cache_dir, n_train=20,
              n_val=4, n_test=8, image_size=16, train_steps=2, seeds=(0,), sweep_seeds=(0,),
              given=dict(eta=[0.1], lam=[1.0], mu=["batch"]))
    sweeps, at, default = study.load_sweep_study("quick", ("smallcnn",), weights=str(weights_folder), **kw)
    swept = [r for by_value in sweeps.values() for runs in by_value.values() for r in runs]
    assert len(swept) == 4 and len(at) == len(default) == 1
    digest = pretrained.weights_digest(weights_folder / "smallcnn.pth")
    assert {r.config.train.weights for r in swept + at + default} == {digest}
    assert all(r.history["epochs"][0]["phase"] == "head" for r in swept + at + default)
    scratch = study.load_sweep_study("quick", ("smallcnn",), **kw)[1]
    assert scratch[0].config.train.weights is None and scratch[0].run_id != at[0].run_id
