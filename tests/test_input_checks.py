"""Invalid input gets a clear error early, and one bad value never poisons valid state (review 3).

One test per defect the review found: each fails on the code before its fix. Valid input is
untouched by these checks (the numbers of every training run, attack and evaluation are the same
bit for bit, and every stored configuration still loads under its own run id).
"""
from __future__ import annotations

import json
import pickle
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from dpaat_lib import attacks, cli, evaluation, experiment, gradcam, methods, metrics, store, training
from dpaat_lib import data as D
from dpaat_lib.attacks import AttackSpec
from dpaat_lib.config import DataConfig, RunConfig, TrainConfig
from dpaat_lib.methods import MethodConfig, build_method
from dpaat_lib import models
from dpaat_lib.models import build_model
from fakes import UNPICKLED, RunsCodeWhenUnpickled

REPO = pathlib.Path(__file__).resolve().parents[1]
SHORT_ATTACKS = (AttackSpec("FGSM", "linf", 2 / 255, 2 / 255, 1, False), AttackSpec("2-PGD", "l2", 0.5, 0.15, 2, True))


def _side(n: int, size: int = 16, seed: int = 0) -> D.SplitTensors:
    g = torch.Generator().manual_seed(seed)
    return D.SplitTensors(x=torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
                          y=torch.arange(n) % 3, image_ids=[f"img{seed}_{i}" for i in range(n)])


def _tensors(size: int = 16) -> dict:
    return {"train": _side(12, size, 0), "val": _side(6, size, 1), "test": _side(6, size, 2)}


def _config(method: str = "std", model: str = "smallcnn", size: int = 16) -> RunConfig:
    return RunConfig(model=model, method=MethodConfig(name=method, attack=attacks.training_attack(steps=1)),
                     data=DataConfig(source="ham10000", digest="review3", image_size=size),
                     train=TrainConfig(epochs=1, batch_size=8), eval_attacks=SHORT_ATTACKS)


# --------------------------------------------------------------------------
# 1. training.to_float and SplitTensors: uint8 only, never in place
# --------------------------------------------------------------------------


def test_to_float_rejects_float_input_and_never_modifies_it(smallcnn):
    x = torch.rand(4, 3, 16, 16)
    before = x.clone()
    with pytest.raises(TypeError, match=r"uint8.*\(x \* 255\)\.round\(\)"):
        training.to_float(x)
    with pytest.raises(TypeError, match="uint8"):
        training.predict_logits(smallcnn, x)
    assert torch.equal(x, before)
    u = (before * 255).to(torch.uint8)
    u0 = u.clone()
    out = training.to_float(u)
    assert out.dtype == torch.float32 and torch.equal(out, u0.float() / 255) and torch.equal(u, u0)


def test_split_tensors_need_uint8_images():
    with pytest.raises(TypeError, match=r"SplitTensors\.x must be uint8.*float32"):
        D.SplitTensors(x=torch.rand(3, 3, 8, 8), y=torch.arange(3), image_ids=["a", "b", "c"])
    with pytest.raises(ValueError, match="2 image_ids"):
        D.SplitTensors(x=torch.zeros(3, 3, 8, 8, dtype=torch.uint8), y=torch.arange(3), image_ids=["a", "b"])
    tensors = _tensors()
    tensors["val"].x = tensors["val"].x.float()  # replaced after it was built
    with pytest.raises(TypeError, match="SplitTensors 'val'.x must be uint8"):
        D.check_split_tensors(tensors)


def test_run_with_float_tensors_fails_before_training(tmp_path):
    tensors = _tensors()
    tensors["train"].x = tensors["train"].x.float() / 255
    before = tensors["train"].x.clone()
    with pytest.raises(TypeError, match="'train'.x must be uint8"):
        experiment.run(_config(), results=tmp_path, tensors=tensors, progress=False)
    assert torch.equal(tensors["train"].x, before)
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


# --------------------------------------------------------------------------
# 2. the attacks reject NaN and inf
# --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_attacks_reject_non_finite_images(smallcnn, image_batch, bad):
    x, y = image_batch
    x = x.clone()
    x[1, 0, 3, 3] = bad
    with pytest.raises(ValueError, match="non-finite"):
        attacks.pgd(smallcnn, x, y, eps=0.5, step_size=0.15, steps=2, norm="l2")
    with pytest.raises(ValueError, match="non-finite"):
        attacks.paper_attacks()[0](smallcnn, x, y)


# --------------------------------------------------------------------------
# 3. DPAAT: a non-finite loss leaves the other radii alone; MethodConfig rejects nonsense
# --------------------------------------------------------------------------

NO_START = AttackSpec("PGD-2", "l2", 0.5, 0.15, 2, False)  # no random start: the same x' in any batch
# A NaN image is the simplest way to make a loss non-finite (in training, bf16 overflow is the likely one).
# Method.loss would refuse the NaN image itself, so these build the method as the training loop does,
# without the value checks: what is tested is the method's own guard.
UNCHECKED = {"check_values": False}


def _dpaat_radii(model, x, y, idx, n_train=8, **cfg):
    method = build_method(MethodConfig(name="dpaat", attack=NO_START, **cfg), n_train, **UNCHECKED)
    method.loss(model, x, y, idx)
    return method


def test_dpaat_non_finite_loss_updates_only_the_finite_samples(smallcnn):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 3, 16, 16, generator=g), torch.arange(8) % 3
    idx = torch.arange(8)
    bad = x.clone()
    bad[3] = float("nan")  # eval mode: only sample 3's losses are NaN
    method = _dpaat_radii(smallcnn, bad, y, idx)
    r = method.radii()
    assert torch.isfinite(r).all(), r
    assert r[3] == 0.5  # its radius is kept (eps0)
    keep = idx != 3
    clean = _dpaat_radii(smallcnn, x[keep], y[keep], idx[keep])  # mu from the 7 finite samples alone
    torch.testing.assert_close(r[keep], clean.radii()[keep], atol=1e-6, rtol=0)
    assert not torch.equal(r[keep], torch.full((7,), 0.5))  # they did move
    # The epoch mean counts only the finite dL, and the log says how many were not.
    logs = method.end_epoch()
    assert np.isfinite(logs["epoch_mu"]) and logs["nonfinite_dL"] == 1
    assert "nonfinite_dL" not in clean.end_epoch()


def test_dpaat_all_non_finite_in_train_mode_keeps_the_radii():
    """In train mode one NaN image spoils BatchNorm's batch statistics, so every loss is NaN: the batch
    then moves no radius, instead of turning them all NaN for the rest of the run."""
    model = build_model("smallcnn").train()
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 3
    x[0] = float("nan")
    method = build_method(MethodConfig(name="dpaat", attack=NO_START, mu="epoch"), 8, **UNCHECKED)
    method.loss(model, x, y, torch.arange(8))
    assert torch.equal(method.radii(), torch.full((8,), 0.5))
    logs = method.end_epoch()
    assert logs["epoch_mu"] is None and logs["nonfinite_dL"] == 8


def test_amat_non_finite_sample_keeps_its_radius(smallcnn):
    """AMAT, like DPAAT: a sample whose adversarial loss is NaN keeps its radius, and the epoch's log counts it."""
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x[3] = float("nan")  # eval mode: only sample 3's logits are NaN
    with torch.no_grad():
        y = smallcnn(x).argmax(1)  # every sample "correct", so every sample is attacked
    method = build_method(MethodConfig(name="amat", attack=NO_START), 8, threshold=0.0,  # every finite one shrinks
                          **UNCHECKED)
    start = method.radii().clone()
    method.loss(smallcnn, x, y, torch.arange(8))
    logs = method.end_epoch()
    assert torch.isfinite(method.radii()).all() and method.radii()[3] == start[3]
    assert logs["nonfinite_adv"] == 1 and logs["shrunk"] == 7 and logs["grown"] == 0
    method.loss(smallcnn, x[:3], y[:3], torch.arange(3))  # a clean epoch: the count was reset
    assert method.end_epoch()["nonfinite_adv"] == 0


ALL_METHODS = methods.METHODS  # every strategy, the ablation's included
IMAGENET_MEAN, IMAGENET_STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def _checked(name: str, n_train: int = 8):
    return build_method(MethodConfig(name=name, attack=NO_START), n_train, threshold=1.0)


@pytest.mark.parametrize("name", ALL_METHODS)
@pytest.mark.parametrize("scale, match", [
    ("imagenet", r"must lie in \[0, 1\].*unnormalised"),  # torchvision's Normalize, as most pipelines have it
    ("255", r"must lie in \[0, 1\].*\[0, 255\]|must lie in \[0, 1\].*1/255"),
])
def test_method_loss_refuses_images_outside_0_1_before_changing_anything(smallcnn, name, scale, match):
    """Method.loss is public: a user's own loop with normalised images would give every attack (and AMAT's and
    DPAAT's radii) a wrong scale without a word. It is refused, and the method's state is left as it was."""
    x, y = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 3
    x = (x - IMAGENET_MEAN.view(1, 3, 1, 1)) / IMAGENET_STD.view(1, 3, 1, 1) if scale == "imagenet" else x * 255
    method = _checked(name)
    before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in method.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        method.loss(smallcnn, x, y, torch.arange(8))
    after = method.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) if isinstance(v, torch.Tensor) else after[k] == v for k, v in before.items())


@pytest.mark.parametrize("name", ALL_METHODS)
@pytest.mark.parametrize("idx, error, match", [
    (torch.arange(8) + 1, IndexError, r"\[0, n_train\) = \[0, 8\).*\[1, 8\]"),  # one past the end
    (torch.arange(8) - 1, IndexError, r"\[-1, 6\]"),
    (torch.arange(4), TypeError, r"idx must be an int64 \(or int32\) tensor of shape \(N,\) = \(8,\).*\(4,\)"),
    (torch.arange(8).float(), TypeError, r"idx must be an int64.*idx\.long\(\).*float32"),
    (list(range(8)), TypeError, r"idx must be an int64.*got a list; pass torch\.as_tensor\(idx\)"),
    (torch.ones(8, dtype=torch.uint8), TypeError, "idx must be an int64.*torch.uint8"),  # a mask to torch
])
def test_method_loss_names_a_bad_index_tensor(smallcnn, name, idx, error, match):
    """An index outside the training set would be an IndexError deep inside AMAT or DPAAT on a CPU, and a
    device-side assert that ends the process on a GPU; STD, AT and SAT would take it silently."""
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 3
    with pytest.raises(error, match=match):
        _checked(name).loss(smallcnn, x, y, idx)


@pytest.mark.parametrize("name", ALL_METHODS)
@pytest.mark.parametrize("bad, match", [
    ({"y": (torch.arange(8) % 3).float()}, r"y must be a long tensor.*float32"),
    ({"y": torch.arange(7) % 3}, r"y must be a long tensor of class indices of shape \(N,\) = \(8,\).*\(7,\)"),
    ({"x": torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)}, r"x must be a float tensor.*to_float"),
    ({"x": torch.rand(3, 16, 16)}, r"x must be a float tensor of images \(N, C, H, W\).*\(3, 16, 16\)"),
])
def test_method_loss_names_a_bad_shape_or_dtype(smallcnn, name, bad, match):
    batch = {"x": torch.rand(8, 3, 16, 16), "y": torch.arange(8) % 3, **bad}
    with pytest.raises(TypeError, match=match):
        _checked(name).loss(smallcnn, batch["x"], batch["y"], torch.arange(8))


@pytest.mark.parametrize("name", ["amat", "dpaat"])
def test_an_int32_index_is_an_index(smallcnn, name):
    """int32 indices work as int64 ones do (torch indexes and scatters with either)."""
    x, y = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 3
    idx = torch.tensor([5, 1, 1, 7, 0, 2, 5, 3])  # repeats, as the balanced sampler draws
    radii = []
    for dtype in (torch.int64, torch.int32):
        method = _checked(name)
        method.loss(smallcnn, x, y, idx.to(dtype))
        method.end_epoch()
        radii.append(method.radii())
    assert torch.equal(*radii) and not torch.equal(radii[0], _checked(name).radii())


def test_value_checks_off_keep_the_shape_checks(smallcnn):
    method = build_method(MethodConfig(name="dpaat", attack=NO_START), 8, check_values=False)
    method.loss(smallcnn, torch.rand(8, 3, 16, 16) * 255, torch.arange(8) % 3, torch.arange(8))  # not read
    with pytest.raises(TypeError, match="idx must be an int64"):
        method.loss(smallcnn, torch.rand(8, 3, 16, 16), torch.arange(8) % 3, torch.arange(4))


def test_the_training_loop_reads_no_batch_values_to_check_them(tmp_path, monkeypatch):
    """train_run builds its method without the value checks (a device sync each batch); its batches are valid
    by construction. With the checks made to fail, a run still trains, and a default method still checks."""
    def refuse(x, what="x"):
        raise AssertionError("a value check ran")
    monkeypatch.setattr(methods, "check_unit_range", refuse)
    with pytest.raises(AssertionError, match="a value check ran"):
        _checked("dpaat").loss(build_model("smallcnn"), torch.rand(8, 3, 16, 16), torch.arange(8) % 3, torch.arange(8))
    for name in ("dpaat", "amat"):
        result = experiment.run(_config(name), results=tmp_path, tensors=_tensors(), progress=False)
        assert result is not None and np.isfinite(result.metrics["GAcc"])


@pytest.mark.parametrize("threshold", [float("nan"), "0.5", True])
def test_amat_rejects_a_threshold_that_is_not_a_number(threshold):
    with pytest.raises(ValueError, match="threshold must be a number"):
        build_method(MethodConfig(name="amat", attack=NO_START), 8, threshold=threshold)


@pytest.mark.parametrize("kw, field", [
    (dict(alpha=1.5), "alpha"), (dict(alpha=-0.1), "alpha"), (dict(lam=-1.0), "lam"),
    (dict(lam=float("nan")), "lam"), (dict(eps_min=-0.1), "eps_min"), (dict(eps_min=1.0, eps_max=0.5), "eps_min"),
    (dict(eps_min=2.0), "eps_max=None"), (dict(eta=float("inf")), "eta"), (dict(eta=-0.5), "eta must be >= 0"),
    (dict(gamma=-1.0), "gamma must be >= 0"), (dict(eps_max=0.2), r"eps0 = 0.5 .* \[0.0, 0.2\]"),
    (dict(eps_min=0.8), r"eps0 = 0.5 .* \[0.8, 1.0\]"),
])
def test_method_config_rejects_values_that_never_make_sense(kw, field):
    with pytest.raises(ValueError, match=field):
        MethodConfig(name="dpaat", **kw)


def test_attack_spec_rejects_negative_or_pixel_unit_values():
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        MethodConfig(name="at", attack=attacks.training_attack(eps0=-0.5))
    with pytest.raises(ValueError, match="steps"):
        AttackSpec("X", "l2", 0.5, 0.15, -1, True)
    with pytest.raises(ValueError, match="255"):
        AttackSpec("FGSM", "linf", 8.0, 8.0, 1, False)


def test_edge_values_stay_valid():
    MethodConfig(name="sat", alpha=0.0)
    MethodConfig(name="dpaat", alpha=1.0, lam=0.0, eps_min=0.5, eps_max=0.5, eta=0.0, gamma=0.0)
    MethodConfig(name="dpaat", eps_min=0.5, eps_max=0.5)  # = eps0: the radii never move
    AttackSpec("clean", "linf", 0.0, 0.0, 0, False)


def test_every_stored_config_still_parses_under_its_run_id():
    stored = sorted(REPO.glob("results/*/*/config.json"))
    assert stored
    for path in stored:
        assert RunConfig.from_dict(json.loads(path.read_text())).run_id == path.parent.name, path


# --------------------------------------------------------------------------
# 4. a requested class without rows, a metadata file without rows
# --------------------------------------------------------------------------


def _folder_with(src: pathlib.Path, dst: pathlib.Path, edit) -> pathlib.Path:
    shutil.copytree(src, dst)
    csv = dst / D.METADATA_FILE
    edit(pd.read_csv(csv)).to_csv(csv, index=False)
    return dst


def test_a_class_without_rows_is_an_error(synthetic_root, tmp_path):
    root = _folder_with(synthetic_root, tmp_path / "nobkl", lambda m: m[m.dx != "bkl"])
    with pytest.raises(D.DataError, match=r"no rows with dx 'bkl'.*Check the dx column.*classes="):
        D.read_metadata(root)
    assert set(D.read_metadata(root, classes=("nv", "mel"))["dx"]) == {"nv", "mel"}
    meta = D.read_metadata(synthetic_root)
    with pytest.raises(D.DataError, match=r"label\(s\) \[1\] have no rows"):
        D.make_split(meta[meta.label != 1], seed=0, n_train=60, n_test=20, n_val=10)
    with pytest.raises(D.DataError, match=r"label\(s\) \[1\] have no rows"):
        D.make_fraction_split(meta[meta.label != 1], seed=0)


def test_a_header_only_metadata_file_is_an_error(synthetic_root, tmp_path):
    root = _folder_with(synthetic_root, tmp_path / "empty", lambda m: m.iloc[:0])
    with pytest.raises(D.DataError, match="header but no data rows"):
        D.read_metadata(root)
    with pytest.raises(D.DataError, match="no rows"):
        D.make_split(D.read_metadata(synthetic_root).iloc[:0], seed=0)


@pytest.mark.parametrize("load", ["checkpoint", "weights"])
def test_a_checkpoint_or_weights_file_is_loaded_as_data_never_as_code(tmp_path, load):
    """Resuming a run, keeping its best checkpoint and fine-tuning from a weights file all read the file with
    torch.load(weights_only=True): a file holding a pickled object is refused before it can run anything."""
    path = tmp_path / "file.pt"
    torch.save({"conv.weight": torch.zeros(1), "x": RunsCodeWhenUnpickled()}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        if load == "checkpoint":
            store.load_torch(path)
        else:
            build_model("squeezenet1_1", 3, weights=path)
    assert not UNPICKLED, "loading the file ran code from it"


# --------------------------------------------------------------------------
# 5. AMAT's STD run uses the same tensors
# --------------------------------------------------------------------------


def test_amat_run_on_tensors_trains_its_std_run_on_them(tmp_path):
    tensors = _tensors()
    cfg = _config("amat")
    result = experiment.run(cfg, results=tmp_path, tensors=tensors, progress=False)
    assert result is not None and "amat_threshold" in result.metrics
    assert (tmp_path / cfg.std_counterpart().run_id / "done").exists()


def test_amat_names_its_std_run_when_it_cannot_be_trained(tmp_path):
    cfg = _config("amat")
    with pytest.raises(D.DataError, match=f"STD run {cfg.std_counterpart().run_id}"):
        experiment.run(cfg, results=tmp_path, progress=False)


# --------------------------------------------------------------------------
# 6. attacked_probs: per-image eps cut into batches; the model's mode restored
# --------------------------------------------------------------------------


def test_attacked_probs_cuts_a_per_image_eps_into_its_batches(smallcnn):
    side = _side(10)
    spec = attacks.paper_attacks()[1]  # I-FGSM: no random start, so batches do not change x'
    eps = torch.linspace(0.0, 8 / 255, 10)
    batched = evaluation.attacked_probs(smallcnn, side.x, side.y, spec, batch_size=4, eps=eps)
    whole = evaluation.attacked_probs(smallcnn, side.x, side.y, spec, batch_size=10, eps=eps)
    torch.testing.assert_close(batched, whole, atol=1e-5, rtol=0)
    clean = evaluation.attacked_probs(smallcnn, side.x, side.y, None)
    torch.testing.assert_close(batched[0], clean[0], atol=1e-5, rtol=0)  # eps 0: the clean image
    with pytest.raises(ValueError, match=r"\(10,\)"):
        evaluation.attacked_probs(smallcnn, side.x, side.y, spec, eps=torch.zeros(9))


def test_evaluate_reads_the_shorter_attacks_from_the_longer_ones_with_the_same_predictions(smallcnn):
    """The paper's five attacks (two random starts, batches that do not divide the images): sharing the
    runs of 10-step I-FGSM and 20-step PGD with their longer versions changes no byte of the predictions,
    and the model computes 71 attack steps per image instead of 101 (plus one forward per prediction)."""
    side = _side(10)
    specs = attacks.paper_attacks(linf_eps=8 / 255)
    assert {s.name: [r.name for r in read] for s, read in evaluation.shared_runs(specs).items()} == {
        "FGSM": ["FGSM"], "20-IFGSM": ["10-IFGSM", "20-IFGSM"], "50-PGD": ["20-PGD", "50-PGD"]}
    classes = ("a", "b", "c")
    passes = []
    hook = smallcnn.register_forward_pre_hook(lambda module, args: passes.append(args[0].shape[0]))
    frames, per_image = {}, {}
    for share in (False, True):
        passes.clear()
        frames[share] = evaluation.evaluate(smallcnn, side, specs, classes, batch_size=4, seed=7, share=share)
        per_image[share] = sum(passes) / 10  # images through the model, per test image
    hook.remove()
    pd.testing.assert_frame_equal(frames[True], frames[False], check_exact=True)
    assert (frames[True]["pred_50-PGD"] != frames[True]["pred_clean"]).any()  # the attacks do something
    assert per_image == {False: 101 + 6, True: 71 + 6}  # the steps, and one forward per prediction
    with pytest.raises(ValueError, match=r"steps \(30,\) must lie in 1..20"):
        evaluation.probs_along(smallcnn, side.x, side.y, specs[2], (30,))


def test_attacked_probs_restores_the_models_mode(smallcnn):
    side = _side(4)
    smallcnn.train()
    evaluation.attacked_probs(smallcnn, side.x, side.y, attacks.paper_attacks()[0])
    assert smallcnn.training
    smallcnn.eval()
    evaluation.attacked_probs(smallcnn, side.x, side.y, None)
    assert not smallcnn.training


# --------------------------------------------------------------------------
# 7. pgd: an Linf radius in 0-255 units, a negative step named as such
# --------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [8.0, torch.tensor([0.01, 8.0, 0.01, 0.01])])
def test_linf_eps_above_one_asks_for_pixel_units(smallcnn, image_batch, eps):
    x, y = image_batch
    with pytest.raises(ValueError, match=r"did you mean eps=8/255"):
        attacks.pgd(smallcnn, x, y, eps=eps, step_size=0.01, steps=1)
    attacks.pgd(smallcnn, x, y, eps=8.0, step_size=0.15, steps=1, norm="l2")  # an L2 radius may exceed 1


def test_negative_step_size_is_named(smallcnn, image_batch):
    x, y = image_batch
    with pytest.raises(ValueError, match="step_size must be finite and >= 0"):
        attacks.pgd(smallcnn, x, y, eps=0.1, step_size=-0.1, steps=2)
    with pytest.raises(ValueError, match="step_size must be finite and >= 0 for every sample"):
        attacks.pgd(smallcnn, x, y, eps=0.1, step_size=torch.tensor([0.1, -0.1, 0.1, 0.1]), steps=2)


def test_uint8_images_into_an_attack_say_how_to_scale(smallcnn, image_batch):
    x, y = image_batch
    with pytest.raises(TypeError, match="to_float"):
        attacks.pgd(smallcnn, (x * 255).to(torch.uint8), y, eps=0.5, step_size=0.15, steps=1, norm="l2")


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.float32])
def test_labels_of_another_dtype_into_an_attack_say_how_to_convert(smallcnn, image_batch, dtype):
    """Cross-entropy takes int64 class indices only: torch's own error names neither y nor the fix."""
    x, y = image_batch
    with pytest.raises(TypeError, match=r"y must be a long tensor of class indices.*y\.long\(\)"):
        attacks.pgd(smallcnn, x, y.to(dtype), eps=0.5, step_size=0.15, steps=1, norm="l2")


# --------------------------------------------------------------------------
# 8. the image size a model needs
# --------------------------------------------------------------------------


def test_too_small_images_for_the_model_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match="inception_v3 needs >= 75 px images; got 32 px"):
        models.check_input_size("inception_v3", 32)
    models.check_input_size("inception_v3", 75)
    models.check_input_size("smallcnn", 16)
    with pytest.raises(ValueError, match="inception_v3 needs >= 75 px images; got 32 px"):
        experiment.run(_config(model="inception_v3", size=32), results=tmp_path, tensors=_tensors(32),
                       progress=False)
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------
# 9. Grad-CAM: under no_grad, shapes, values, a caller's gradients
# --------------------------------------------------------------------------


def test_cams_work_under_no_grad(smallcnn, image_batch):
    x, y = image_batch
    expected = gradcam.cams(smallcnn, "smallcnn", x, y)
    with torch.no_grad():
        maps = gradcam.cams(smallcnn, "smallcnn", x, y)
    np.testing.assert_array_equal(maps, expected)


def test_cams_check_the_images(smallcnn, image_batch):
    x, y = image_batch
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*x\[None\]"):
        gradcam.cams(smallcnn, "smallcnn", x[0], y[:1])
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        gradcam.cams(smallcnn, "smallcnn", bad, y)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gradcam.cams(smallcnn, "smallcnn", x * 255, y)


def test_cams_leave_no_gradient_in_the_callers_images(smallcnn, image_batch):
    x, y = image_batch
    leaf = x.clone().requires_grad_(True)
    gradcam.cams(smallcnn, "smallcnn", leaf, y)
    assert leaf.grad is None


# --------------------------------------------------------------------------
# 10. metrics: labels outside the classes, missing probability columns
# --------------------------------------------------------------------------


def _predictions(labels, classes=("nv", "mel", "bkl")) -> pd.DataFrame:
    n = len(labels)
    p = np.full((n, len(classes)), 1 / len(classes))
    return pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "label": labels, "pred_clean": [0] * n,
                         **{f"p_clean_{c}": p[:, k] for k, c in enumerate(classes)}})


def test_metrics_reject_labels_outside_the_classes():
    pred = _predictions([0, 1, 2, 1])
    with pytest.raises(ValueError, match=r"'label' has value\(s\) \[2\] outside range\(2\)"):
        metrics.compute_metrics(pred, ("nv", "mel"))
    with pytest.raises(ValueError, match="outside range"):
        metrics.compute_metrics(_predictions([0, 1, -1, 1]), ("nv", "mel", "bkl"))
    metrics.compute_metrics(pred, ("nv", "mel", "bkl"))
    named = pred.assign(label=["nv", "mel", "bkl", "mel"])  # names, not indices
    with pytest.raises(ValueError, match=r"column 'label' must hold class indices \(integers 0..2 for .*got dtype "
                                         r"(object|str); map class names to their position in classes"):
        metrics.compute_metrics(named, ("nv", "mel", "bkl"))


@pytest.mark.parametrize("metric", [metrics.macro_f1, metrics.per_class_recall, metrics.confusion])
def test_every_metric_given_the_classes_refuses_a_label_outside_them(metric):
    """scikit-learn's confusion_matrix drops a row whose label is not among its labels: 3 counts for 4 images."""
    with pytest.raises(ValueError, match=r"'label' has value\(s\) \[5\] outside range\(3\)"):
        metric(_predictions([0, 1, 5, 1]), ("nv", "mel", "bkl"))
    with pytest.raises(ValueError, match="the predictions frame has no rows"):
        metric(_predictions([]), ("nv", "mel", "bkl"))


def test_a_corrupt_mask_is_named(synthetic_root, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(synthetic_root, root)
    ids = D.read_metadata(root)["image_id"].tolist()[:3]
    (root / D.MASK_DIR / f"{ids[1]}{D.MASK_SUFFIX}").write_bytes(b"not a png")
    with pytest.raises(D.DataError, match=rf"Cannot read mask .*{ids[1]}{D.MASK_SUFFIX}.*Re-download or remove"):
        D.load_masks(root, ids, 16)


def test_marp_is_the_map_under_the_attack_named():
    pred = _predictions([0, 1, 2, 1])
    scores = np.eye(3)[[0, 1, 1, 2]]  # under "my-PGD": two of four right
    pred = pred.assign(**{"pred_my-PGD": [0, 1, 1, 2]}, **{f"p_my-PGD_{c}": scores[:, k]
                                                          for k, c in enumerate(("nv", "mel", "bkl"))})
    classes = ("nv", "mel", "bkl")
    assert "mARP" not in metrics.compute_metrics(pred, classes)  # the paper's 20-PGD was not evaluated
    got = metrics.compute_metrics(pred, classes, marp_attack="my-PGD")
    assert got["mARP"] == metrics.mean_average_precision(pred, classes, "my-PGD") < 1
    with pytest.raises(ValueError, match=r"marp_attack='20-PGD': no predictions under that attack; .* my-PGD"):
        metrics.compute_metrics(pred, classes, marp_attack="20-PGD")


def test_metrics_name_missing_probability_columns():
    pred = _predictions([0, 1, 2]).drop(columns=["p_clean_mel", "p_clean_bkl"])
    with pytest.raises(ValueError, match=r"\['p_clean_mel', 'p_clean_bkl'\].*needs \['label', 'pred_clean', "
                                         r"'p_clean_nv', 'p_clean_mel', 'p_clean_bkl'\]"):
        metrics.compute_metrics(pred, ("nv", "mel", "bkl"))
    with pytest.raises(ValueError, match="p_clean_mel"):
        metrics.mean_average_precision(pred, ("nv", "mel", "bkl"))


# --------------------------------------------------------------------------
# 11. the command line
# --------------------------------------------------------------------------


def test_cli_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: cpu)" in text and "(default: paper)" in text
    with pytest.raises(SystemExit):
        cli.main(["synthetic", "--help"])
    assert "(default: 150)" in capsys.readouterr().out


def test_cli_set_names_the_field_of_a_bad_value(capsys, tmp_path):
    assert cli.main(["quick", "--results", str(tmp_path), "--set", "epochs=abc"]) == 2
    err = capsys.readouterr().err
    assert "--set epochs=abc: field 'epochs' takes int" in err
    assert cli.main(["quick", "--results", str(tmp_path), "--set", "bf16=maybe"]) == 2
    assert "field 'bf16' takes bool" in capsys.readouterr().err


def test_cli_says_a_data_folder_does_not_exist(capsys, tmp_path):
    missing = tmp_path / "nonexistent"
    assert cli.main(["quick", "--data", str(missing), "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--data {missing}: the folder does not exist" in err


def test_cli_without_data_names_the_options_that_give_it(capsys, tmp_path):
    """The paper profile with no --data and nothing stored: the message speaks the command line's language."""
    assert cli.main(["train", "--model", "smallcnn", "--method", "std", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "(no data folder was given)" in err and "--data DIR" in err and "--profile quick" in err
    assert "at None" not in err and "digests" not in err


def test_cli_train_refuses_the_grids_model_and_method_lists(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--profile", "quick", "--model", "smallcnn", "--method", "std", "--methods", "at"])
    assert "--models, --methods and --book are for `dpaat grid`" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--profile", "quick", "--model", "smallcnn", "--method", "std", "--book"])
    assert "are for `dpaat grid`" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "--methods" not in capsys.readouterr().out  # not offered where it would be refused


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("kind", [list, np.array, tuple])
def test_a_per_sample_radius_may_be_a_list_or_an_array(smallcnn, kind, norm):
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    values = [0.25, 0.5, 0.0, 1.0] if norm == "l2" else [2 / 255, 4 / 255, 0.0, 8 / 255]
    as_tensor = attacks.pgd(smallcnn, x, y, eps=torch.tensor(values), norm=norm, steps=2,
                            step_size=0.1 if norm == "l2" else 1 / 255, generator=torch.Generator().manual_seed(0))
    got = attacks.pgd(smallcnn, x, y, eps=kind(values), norm=norm, steps=2, step_size=0.1 if norm == "l2" else 1 / 255,
                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, as_tensor)
    with pytest.raises(ValueError, match=r"shape \(N,\) = \(4,\).*got shape \(3,\)\. Pass 4 values or a float"):
        attacks.pgd(smallcnn, x, y, eps=kind(values[:3]), norm=norm, steps=1, step_size=0.01)
    for bad, what in (("0.5", "got str"), (kind([True, False, True, True]), "of torch.bool")):
        with pytest.raises(TypeError, match=rf"eps must be a float or a tensor.*{what}"):
            attacks.pgd(smallcnn, x, y, eps=bad, norm=norm, steps=1, step_size=0.01)
    if norm == "linf":  # a list in 0-255 units is named as a tensor's would be
        with pytest.raises(ValueError, match=r"Linf eps = 8 is above 1"):
            attacks.pgd(smallcnn, x, y, eps=kind([8, 8, 8, 8]), norm=norm, steps=1, step_size=0.01)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images_are_refused_with_the_fix(smallcnn, dtype):
    """In half precision x + delta rounds past the radius (bf16: Linf 2/255 overshot by 25%) and a zero gradient
    gives NaN images under L2 in fp16."""
    x, y = torch.rand(4, 3, 16, 16, dtype=dtype), torch.tensor([0, 1, 2, 0])
    with pytest.raises(TypeError, match=r"float32 .* got torch\.(b?float16).*x\.float\(\).*torch\.autocast"):
        attacks.pgd(smallcnn, x, y, eps=0.5, step_size=0.15, steps=1, norm="l2")


@pytest.mark.parametrize("kw, error, match", [
    (dict(eps=True), TypeError, r"eps must be a float.*got a bool"),
    (dict(eps=torch.tensor([True, False, True, True])), TypeError, r"eps must be a float.*got a bool"),
    (dict(steps=-3), ValueError, r"steps must be an integer >= 0, got -3"),
    (dict(steps=2.5), ValueError, r"steps must be an integer >= 0, got 2\.5"),
    (dict(step_size=2.0), ValueError, r"Linf step_size = 2 is above 1.*step_size=2/255"),
])
def test_perturb_names_a_bad_radius_step_or_count(smallcnn, kw, error, match):
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    args = dict(eps=2 / 255, step_size=0.5 / 255, steps=1, norm="linf") | kw
    with pytest.raises(error, match=match):
        attacks.perturb(smallcnn, x, y, **args)


def test_a_radius_that_requires_grad_gives_a_detached_image(smallcnn):
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    eps = torch.full((4,), 0.5, requires_grad=True)
    for steps in (0, 1):
        out = attacks.pgd(smallcnn, x, y, eps=eps, step_size=0.15, steps=steps, norm="l2")
        assert not out.requires_grad and eps.grad is None


def test_labels_must_be_class_indices_of_the_classes_given(smallcnn):
    side = _side(6)
    with pytest.raises(TypeError, match=r"SplitTensors.y must be int64 class indices, got torch.int32; pass y.long"):
        D.SplitTensors(x=side.x, y=side.y.int(), image_ids=side.image_ids)
    with pytest.raises(ValueError, match=r"SplitTensors.y must be class indices >= 0, got -1"):
        D.SplitTensors(x=side.x, y=side.y - 1, image_ids=side.image_ids)
    side = D.SplitTensors(x=side.x, y=side.y.clamp(max=1) * 7, image_ids=side.image_ids)
    with pytest.raises(ValueError, match=r"test.y has class index 7, outside the 3 classes"):
        evaluation.evaluate(smallcnn, side, (), ("nv", "mel", "bkl"))


def test_evaluate_needs_one_class_name_per_output(smallcnn):
    side = _side(6)
    for classes in (("nv", "mel"), ("nv", "mel", "bkl", "bcc")):  # a score column dropped, or one past the output
        with pytest.raises(ValueError, match=rf"the model has 3 outputs but {len(classes)} classes were given"):
            evaluation.evaluate(smallcnn, side, attacks.paper_attacks()[:1], classes)


# --------------------------------------------------------------------------
# 12. docstrings of the public strategy and metric functions
# --------------------------------------------------------------------------


def test_public_strategy_and_metric_functions_are_documented():
    assert "idx" in methods.Method.loss.__doc__ and "no_grad" in methods.Method.loss.__doc__
    assert "[0, 1]" in methods.Method.loss.__doc__ and "train mode" in methods.Method.loss.__doc__
    assert methods.per_sample_ce.__doc__
    assert "with_eps" in AttackSpec.__call__.__doc__ and "step" in AttackSpec.__call__.__doc__
    public = [f for name, f in vars(metrics).items()
              if callable(f) and not name.startswith("_") and getattr(f, "__module__", "") == metrics.__name__]
    assert public and all(f.__doc__ for f in public), [f.__name__ for f in public if not f.__doc__]
