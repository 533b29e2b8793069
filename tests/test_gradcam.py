"""Grad-CAM maps and their faithfulness measures (dpaat_lib.gradcam), on tiny CPU inputs."""
from __future__ import annotations

import shutil
from dataclasses import replace

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dpaat_lib import experiment, gradcam, profiles
from dpaat_lib.models import build_model, gradcam_target_layer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny inputs: one thread is as fast, and far faster when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name,size", [("smallcnn", 32), ("mobilenet_v2", 64), ("efficientnet_b0", 64)])
def test_cams_shape_range_hooks_and_mode(name, size):
    torch.manual_seed(0)
    model = build_model(name, 3).train()
    x = torch.rand(3, 3, size, size)
    x_before = x.clone()
    maps = gradcam.cams(model, name, x, torch.tensor([0, 1, 2]))
    assert maps.shape == (3, size, size) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6 and maps.max() > 0.5
    layer = gradcam_target_layer(model, name)
    assert len(layer._forward_hooks) == 0 and len(layer._backward_hooks) == 0
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(x, x_before)
    model.eval()
    gradcam.cams(model, name, (x * 255).to(torch.uint8), torch.tensor([0, 1, 2]))  # uint8 accepted
    assert not model.training


def test_cams_take_a_users_own_model():
    """A bare torchvision model of a registered CNN is found by name; any model by its layer (target_layer);
    a model without the named layer gets a message that says what to pass."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3).eval()
    x, y = torch.rand(2, 3, 64, 64), torch.tensor([0, 2])
    by_name = gradcam.cams(net, "resnet18", x, y)
    np.testing.assert_array_equal(by_name, gradcam.cams(net, None, x, y, target_layer=net.layer4))
    assert by_name.shape == (2, 64, 64) and by_name.max() > 0.5
    with pytest.raises(ValueError, match=r"Normalized has no layer 'layer4.-1'.*target_layer="):
        gradcam.cams(build_model("smallcnn"), "resnet18", x, y)
    with pytest.raises(ValueError, match=r"give model_name .* or target_layer="):
        gradcam.cams(net, None, x, y)


def test_cams_do_not_depend_on_an_in_place_op_after_the_target_layer(monkeypatch):
    """DenseNet121 applies ReLU in place to its target layer's output (`features`). pytorch-grad-cam keeps that
    output as `.cpu()`, the tensor itself on a CPU: the maps must be those of the layer's own output, as on a
    GPU, not of the ReLU's (the same maps as with an out-of-place ReLU)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = build_model("densenet121").eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 2])
    in_place = gradcam.cams(model, "densenet121", x, targets)
    relu = F.relu
    monkeypatch.setattr(F, "relu", lambda t, inplace=False: relu(t))  # DenseNet.forward's F.relu, out of place
    np.testing.assert_allclose(in_place, gradcam.cams(model, "densenet121", x, targets), atol=1e-6)


def test_cams_keep_a_callers_gradients_and_work_with_frozen_weights():
    torch.manual_seed(0)
    model = build_model("smallcnn", 3).eval()  # eval: the caller's own pass below moves no BatchNorm statistics
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    free = gradcam.cams(model, "smallcnn", x, y)
    model(x).sum().backward()  # a caller's accumulated gradients
    kept = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert np.array_equal(gradcam.cams(model, "smallcnn", x, y), free)
    assert all(torch.equal(p.grad, kept[n]) for n, p in model.named_parameters())
    model.requires_grad_(False)  # an inference model: every weight frozen
    np.testing.assert_allclose(gradcam.cams(model, "smallcnn", x, y), free, atol=1e-6)
    with pytest.raises(ValueError, match="target_layer .* is not a module of this model"):
        gradcam.cams(model, None, x, y, target_layer=build_model("smallcnn", 3).net)


def test_cams_bad_target_raises_instead_of_being_swallowed():
    model = build_model("smallcnn", 3)
    with pytest.raises(ValueError, match="out of range"):
        gradcam.cams(model, "smallcnn", torch.rand(1, 3, 32, 32), torch.tensor([7]))
    assert len(gradcam_target_layer(model, "smallcnn")._forward_hooks) == 0


@pytest.mark.parametrize("x, targets, error, match", [
    (torch.rand(3, 32, 32), [0], ValueError, r"batch of images \(N, 3, H, W\), got \(3, 32, 32\).*pass x\[None\]"),
    (torch.ones(2, 3, 32, 32, dtype=torch.int32), [0, 1], TypeError, r"uint8 \(0-255\) or float in \[0, 1\]"),
    (2 * torch.ones(2, 3, 32, 32), [0, 1], ValueError, r"must lie in \[0, 1\]"),
    (torch.rand(2, 3, 32, 32), [0, 1, 2], ValueError, r"got 2 images but 3 targets"),
    (torch.rand(2, 3, 32, 32), [0, -1], ValueError, r"class indices >= 0, got \[0, -1\]"),
    (torch.rand(2, 3, 32, 32), [0.0, 1.7], ValueError, r"class indices \(integers\), got \[0\.0, 1\.7"),
])
def test_cams_name_a_bad_batch(x, targets, error, match):
    with pytest.raises(error, match=match):
        gradcam.cams(build_model("smallcnn", 3), "smallcnn", x, torch.tensor(targets))


@pytest.mark.parametrize("kw, match", [(dict(steps=0), r"steps must be >= 1, got 0"),
                                       (dict(cam=np.zeros((2, 16, 16))), r"cam has shape \(2, 16, 16\), expected "
                                                                         r"\(2, 32, 32\)")])
def test_deletion_insertion_names_a_bad_argument(kw, match):
    args = {"cam": np.zeros((2, 32, 32)), "steps": 4, **kw}
    with pytest.raises(ValueError, match=match):
        gradcam.deletion_insertion(build_model("smallcnn", 3), torch.rand(2, 3, 32, 32), torch.tensor([0, 1]),
                                   args["cam"], args["steps"])


def test_energy_in_mask():
    mask = np.zeros((2, 8, 8), bool)
    mask[:, 2:5, 2:5] = True
    inside = mask.astype(np.float32)
    outside = (~mask).astype(np.float32)
    np.testing.assert_allclose(gradcam.energy_in_mask(inside, mask), [1.0, 1.0])
    np.testing.assert_allclose(gradcam.energy_in_mask(outside, mask), [0.0, 0.0])
    uniform = np.ones((1, 8, 8), np.float32)
    np.testing.assert_allclose(gradcam.energy_in_mask(uniform, mask[:1]), [9 / 64], rtol=1e-6)


class PatchModel(nn.Module):
    """Two-class logits from the mean of one fixed patch: the only evidence lies there."""

    PATCH = (slice(8, 16), slice(8, 16))

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(30.0))

    def forward(self, x):
        s = self.scale * (x[:, :, self.PATCH[0], self.PATCH[1]].mean(dim=(1, 2, 3)) - 0.9)
        return torch.stack([s, -s], dim=1)


def _patch_images(n=4, size=32):
    g = torch.Generator().manual_seed(0)
    x = 0.3 * torch.rand(n, 3, size, size, generator=g)
    x[:, :, PatchModel.PATCH[0], PatchModel.PATCH[1]] = 1.0
    return x


@pytest.mark.parametrize("baseline", ["blur", "mean"])
def test_deletion_insertion_prefers_the_map_on_the_evidence(baseline):
    model, x = PatchModel(), _patch_images()
    y = torch.zeros(4, dtype=torch.long)
    good = np.zeros((4, 32, 32), np.float32)
    good[:, PatchModel.PATCH[0], PatchModel.PATCH[1]] = 1
    bad = 1 - good  # everywhere but the evidence
    r_good = gradcam.deletion_insertion(model, x, y, good, steps=10, baseline=baseline)
    r_bad = gradcam.deletion_insertion(model, x, y, bad, steps=10, baseline=baseline)
    assert r_good["deletion_auc"].shape == (4,) and len(r_good["fractions"]) == 11
    assert r_good["deletion_curve"].shape == (11,) and r_good["deletion_curves"].shape == (4, 11)
    np.testing.assert_allclose(r_good["deletion_curve"], r_good["deletion_curves"].mean(axis=0))
    assert (r_good["deletion_auc"] < 0.1).all() and (r_bad["deletion_auc"] > 0.8).all()
    assert (r_good["insertion_auc"] > 0.9).all() and (r_bad["insertion_auc"] < 0.2).all()
    # both curves run between the original image and the baseline
    assert r_good["deletion_curve"][0] == pytest.approx(r_good["insertion_curve"][-1], abs=1e-6)
    assert r_good["deletion_curve"][-1] == pytest.approx(r_good["insertion_curve"][0], abs=1e-6)


def test_road_scores_finite_and_seeded():
    torch.manual_seed(0)
    model = build_model("smallcnn", 3).eval()
    x, y = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    maps = gradcam.cams(model, "smallcnn", x, y)
    state = torch.get_rng_state()
    scores = gradcam.road_scores(model, x, y, maps, percentiles=(20, 50, 80))
    assert torch.equal(state, torch.get_rng_state())  # global random state untouched
    assert scores.shape == (3,) and np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, gradcam.road_scores(model, x, y, maps, percentiles=(20, 50, 80)))
    # the patch model: a map on the evidence scores higher than one elsewhere
    px, py = _patch_images(2), torch.zeros(2, dtype=torch.long)
    good = np.zeros((2, 32, 32), np.float32)
    good[:, PatchModel.PATCH[0], PatchModel.PATCH[1]] = 1
    bad = np.zeros((2, 32, 32), np.float32)
    bad[:, 20:28, 20:28] = 1
    assert (gradcam.road_scores(PatchModel(), px, py, good, percentiles=(10, 30))
            > gradcam.road_scores(PatchModel(), px, py, bad, percentiles=(10, 30))).all()


def test_select_correct():
    frame = pd.DataFrame({"image_id": [f"i{k}" for k in range(9)], "label": [0, 0, 0, 1, 1, 1, 2, 2, 2],
                          "pred_clean": [0, 0, 1, 1, 1, 1, 2, 0, 0]})
    with pytest.warns(UserWarning, match="'bkl': only 1"):
        ids = gradcam.select_correct(frame, 2, ("nv", "mel", "bkl"), seed=3)
    assert ids[:2] == ["i0", "i1"] and set(ids[2:4]) <= {"i3", "i4", "i5"} and ids[4:] == ["i6"]
    assert gradcam.select_correct(frame, 1, ("nv", "mel", "bkl"), seed=3) == \
        gradcam.select_correct(frame, 1, ("nv", "mel", "bkl"), seed=3)
    other = frame.assign(pred_clean=[0, 1, 0, 1, 1, 0, 2, 2, 2])  # correct in both: i0, i3, i4, i6
    with pytest.warns(UserWarning):
        assert gradcam.select_correct([frame, other], 3, ("nv", "mel", "bkl")) == ["i0", "i3", "i4", "i6"]
    with pytest.raises(ValueError, match="pred_FGSM"):
        gradcam.select_correct(frame, 1, ("nv", "mel", "bkl"), attack="FGSM")


def test_thumbnails_are_stored_for_some_images_and_scores_for_all(tiny_run):
    cfg, result, results, cache = tiny_run
    ids = list(result.predictions["image_id"][1::4])  # 9 test images (not those of the test above)
    full = gradcam.cam_result(cfg, results=results, image_ids=ids, cache_dir=cache, thumbnails=ids[:3])
    assert full["images"] is None and full["thumbnail_ids"] == ids[:3] and full["road"].shape == (9,)
    part = gradcam.cam_result(cfg, results=results, image_ids=[ids[2], ids[0]], cache_dir=cache)
    assert part["images"].shape[0] == 2 and part["cams"].shape[0] == 2
    scores = gradcam.cam_result(cfg, results=results, image_ids=ids[2:5], cache_dir=cache)
    assert scores["images"] is None and scores["thumbnail_ids"] == [ids[2]]
    np.testing.assert_array_equal(scores["road"], full["road"][2:5])
    with pytest.raises(ValueError, match="thumbnails must be among"):
        gradcam.cam_result(cfg, results=results, image_ids=ids[:2], thumbnails=[ids[5]], cache_dir=cache)


def test_candidates_are_the_start_of_each_class_order_and_hold_every_selection():
    """The maps a run stores (candidate_ids) serve every selection with pool <= their count, whatever
    the other runs predict, and a selection of n is the start of one of more."""
    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame({"image_id": [f"i{k:02d}" for k in range(n)], "label": rng.integers(0, 3, n)})
    runs = [frame.assign(pred_clean=np.where(rng.random(n) < 0.7, frame["label"], (frame["label"] + 1) % 3))
            for _ in range(3)]
    classes = ("nv", "mel", "bkl")
    pool = gradcam.candidate_ids(frame, classes, per_class=8, seed=0)
    assert len(pool) == 24 and len(set(pool)) == 24
    assert gradcam.candidate_ids(runs[1], classes, per_class=8) == pool  # predictions play no part
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = gradcam.select_correct(runs, 2, classes, pool=8)
        large = gradcam.select_correct(runs, 4, classes, pool=8)
    assert set(small) <= set(large) <= set(pool)
    correct_in_all = set.intersection(*(set(r.loc[r.pred_clean == r.label, "image_id"]) for r in runs))
    assert set(large) <= correct_in_all
    assert gradcam.candidate_ids(frame, classes, per_class=8, seed=1) != pool


def test_overlay():
    img = np.full((8, 8, 3), 128, np.uint8)
    out = gradcam.overlay(img, np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8))
    assert out.shape == (8, 8, 3) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A two-epoch smallcnn STD run on the synthetic data at 32 px (one evaluation attack)."""
    tmp = tmp_path_factory.mktemp("gradcam_run")
    cache, results = tmp / "cache", tmp / "results"
    prof = profiles.get_profile("quick", n_train=24, n_val=6, n_test=12, image_size=32, epochs=2)
    data = experiment.resolve_data(profiles.data_config(prof), None, cache_dir=cache)
    cfg = profiles.run_config(prof, "smallcnn", "std", 0, data)
    cfg = replace(cfg, eval_attacks=cfg.eval_attacks[:1])
    result = experiment.run(cfg, results=results, cache_dir=cache, progress=False)
    return cfg, result, results, cache


def test_cam_result_computes_stores_and_reloads(tiny_run):
    cfg, result, results, cache = tiny_run
    ids = list(result.predictions["image_id"][::6])  # 6 test images, two per class
    out = gradcam.cam_result(cfg, results=results, image_ids=ids, cache_dir=cache)
    path = gradcam.cam_file(result.path, ids)
    assert path.is_file() and not list(result.path.glob(".*.tmp"))
    assert out["image_ids"] == ids
    assert out["images"].shape == (6, 32, 32, 3) and out["images"].dtype == np.uint8
    assert out["cams"].shape == (6, 32, 32) and out["cams"].dtype == np.float32
    assert out["labels"].tolist() == result.predictions.set_index("image_id").loc[ids, "label"].tolist()
    assert out["masks"].shape == (6, 32, 32) and out["masks"].dtype == bool
    e = out["energy_in_mask"]
    assert e.shape == (6,) and (np.isnan(e) | ((e >= 0) & (e <= 1))).all()
    for k in ("deletion_auc", "insertion_auc", "road"):
        assert out[k].shape == (6,) and np.isfinite(out[k]).all()
    # Timed, for the GPU grid's estimates (dpaat_lib.grid.estimate_seconds).
    assert out["seconds"] > 0 and gradcam.stored_seconds(path) == out["seconds"]

    aside = result.path.parent / "ckpt-aside"  # stored maps need neither checkpoint nor data; the checkpoint
    shutil.move(result.path / "ckpt", aside)    # comes back at the end for the module's other tests
    try:
        again = gradcam.cam_result(cfg, results=results, image_ids=ids, cache_dir=cache.parent / "no-cache")
        assert again["image_ids"] == ids
        for k in ("images", "cams", "labels", "masks", "energy_in_mask", "deletion_auc", "insertion_auc", "road"):
            np.testing.assert_array_equal(again[k], out[k])

        # A selection among stored images is served from the stored file, in the order asked for.
        part = gradcam.cam_result(cfg, results=results, image_ids=[ids[3], ids[0]], cache_dir=cache)
        assert part["image_ids"] == [ids[3], ids[0]] and not gradcam.cam_file(result.path, [ids[3], ids[0]]).exists()
        for k in ("images", "cams", "labels", "masks", "energy_in_mask", "deletion_auc", "deletion_curves", "road"):
            np.testing.assert_array_equal(part[k], out[k][[3, 0]])
        np.testing.assert_allclose(part["deletion_curve"], out["deletion_curves"][[3, 0]].mean(axis=0))
        np.testing.assert_allclose(out["cams"], np.round(out["cams"] * 255) / 255, atol=1e-6)  # stored as uint8
        other = next(i for i in result.predictions["image_id"] if i not in ids)
        with pytest.raises(FileNotFoundError, match="checkpoint"):  # an image not stored needs the model
            gradcam.cam_result(cfg, results=results, image_ids=[ids[0], other], cache_dir=cache)
    finally:
        shutil.move(aside, result.path / "ckpt")


def test_a_cnn_whose_gradcam_map_is_1x1_is_refused_with_the_size_that_works():
    """ResNet18 at 32 px: layer4's map is 1 x 1, so every map is constant (chapter 8 used to score such maps and
    then fail on its findings)."""
    from dpaat_lib import models, report

    assert models.gradcam_map_shape("resnet18", 32) == (1, 1) and models.gradcam_map_shape("resnet18", 64) == (2, 2)
    report.check_gradcam_resolution(report.make_profile("quick"))  # smallcnn at 32 px: 4 x 4
    with pytest.raises(ValueError, match=r"at 32 px the Grad-CAM layer of resnet18 gives a 1 x 1 map.*-p image_size 64"):
        report.check_gradcam_resolution(report.make_profile("quick", models="[resnet18]"))
