# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Methods: each equation as it runs
#
# **Goal.** State every loss and update of the paper (its eq. 11-15) and of the baselines
# (STD, AT, SAT, AMAT) in the form this book's runs use, by showing the library code that
# computes it, and say which parts the paper left unstated and how we filled them. The paper's
# text lost its equation bodies in extraction; `method.md` in the project notes how each one
# was reconstructed from the prose. Equations are written in plain text: x in [0,1]^(3xHxW),
# p = softmax(f(x)), CE the per-sample cross-entropy, m the batch size.

# %% tags=["parameters"]
profile = "quick"  # quick | cpu-real | paper (dpaat_lib.profiles)
data_root = None  # HAM10000 folder (official layout); None: synthetic (quick) or the stored results
results_root = "results"  # relative paths are relative to the repository root
models = None  # None: the profile's models
methods = None  # unused here: this chapter trains nothing
image_size = None  # None: the profile's
epochs = None  # None: the profile's
seeds = None  # None: the profile's
eps0 = None  # None: the profile's L2 radius (training, 20/50-step PGD); the PGD step keeps its ratio to it
linf_eps = None  # None: the profile's FGSM and I-FGSM radius (Linf 2/255); "8/255": another (a stored model
#                 with its checkpoint is evaluated again, not trained again)
device = "cpu"

# %%
import pandas as pd
import torch

from dpaat_lib import report  # first: it keeps tqdm's notebook warning out of the page
from dpaat_lib import attacks, methods as M, profiles

# %%
prof = report.make_profile(profile, data_root=data_root, models=models, image_size=image_size, epochs=epochs,
                           eps0=eps0, linf_eps=linf_eps, seeds=seeds)
dpaat_cfg = profiles.run_config(prof, prof.models[0], "dpaat", prof.seeds[0], profiles.data_config(prof))
report.profile_banner(prof)

# %% [markdown]
# ## Threat model
#
# The paper trains "with 0.5 of [a symbol lost in extraction] and 7-step PGD ... with [a norm lost
# in extraction], and step size of 0.15" (section IV-A); the evaluation radii are not given. Our
# reading (the value 0.5 as the radius eps0; the norm from the step size 0.15 against eps0 over
# 7 steps, the contrast it draws with I-FGSM's Linf distance and its
# identical 20- and 50-step PGD numbers): the **training adversary** of AT, SAT, AMAT and DPAAT
# is PGD in L2 with eps0 = 0.5, step 0.15, 7 steps, random start; the **evaluation** uses FGSM
# and 10/20-step I-FGSM in Linf at eps = 2/255 (step eps/4; the parameter `linf_eps`) and 20/50-step
# PGD in L2 at eps0.
# All attacks come from one loop, `dpaat_lib.attacks.perturb`; a radius may differ per sample.
# Chapter 4 also sweeps eps (on the first seed), so a reader can see how the ranking moves
# with the radius.

# %%
pd.DataFrame([a.to_dict() for a in (dpaat_cfg.method.attack, *dpaat_cfg.eval_attacks)],
             index=["training adversary", *["evaluation"] * len(dpaat_cfg.eval_attacks)]).round(5)

# %%
report.md(report.threat_scale_note(dpaat_cfg))

# %%
report.md(report.source_block(attacks.perturb))

# %% [markdown]
# The L2 threat scales each sample by its own norm ratio, so eps may be a tensor of one
# radius per sample (what AMAT and DPAAT need):

# %%
report.md(report.source_block(attacks.L2))

# %% [markdown]
# ## The models
#
# The paper's six CNNs come from torchvision with a new head for the classes; `smallcnn` is this
# book's own four-block CNN (3x3 convolution, BatchNorm, ReLU and 2x2 max-pooling per block, 32,
# 64, 128 and 128 channels, global average pooling and one linear layer) for the CPU profiles.
# Every model takes images in [0, 1] and normalises them inside (`dpaat_lib.models.Normalized`),
# so attacks work in pixel space.

# %%
report.model_table(prof.models, prof.image_size, len(prof.classes))

# %% [markdown]
# ## The baselines
#
# - STD: mean CE(x).
# - AT (Madry et al.): mean CE(x') with x' = PGD within eps0.
# - SAT (Goodfellow et al.): alpha * mean CE(x) + (1 - alpha) * mean CE(x'), alpha = 0.5.
#
# `forward_pair(model, x, x_adv)` is `(model(x), model(x_adv))`: two forward passes, each batch
# through BatchNorm on its own; when training is compiled it runs both in one graph.
#
# Each method's public `loss(model, x, y, idx)` first checks the batch (`methods.check_batch`:
# shapes and dtypes; images finite and in [0, 1], so that ImageNet-normalised images are refused
# instead of attacked at a wrong scale; indices inside the training set), then computes its
# `batch_loss`, shown below. The training loop builds its batches from uint8 / 255 and turns the
# value checks off (`check_values=False`), since each costs a GPU a sync per batch.

# %%
report.md(report.source_block(M.AT.batch_loss) + "\n\n" + report.source_block(M.SAT.batch_loss)
          + "\n\n" + report.source_block(M.forward_pair))

# %% [markdown]
# - AMAT (Ma & Liang 2022), adapted to classification: one radius per training image, starting
#   at eps0/10 and capped at 2 eps0; a fixed loss threshold T from an already trained STD model
#   of the same architecture (its mean validation CE). Only the correctly classified images of a
#   batch are attacked, and the adversarial term averages over them. At the end of each epoch, an
#   attacked image whose adversarial loss stayed at or below T gets a larger radius (+ eps0/10), an
#   attacked image above T moves half-way towards the distance the attack actually used, and an
#   image never attacked in the epoch keeps its radius.

# %%
report.md(report.source_block(M.AMAT.end_epoch))

# %% [markdown]
# ## DPAAT
#
# Per batch (eq. 11-15):
#
# 1. l_i = CE(x_i); x'_i = PGD-L2 within the sample's current radius eps_i; l'_i = CE(x'_i).
# 2. dL_i = l'_i - l_i (no gradient), mu = mean of dL over the batch (eq. 13-14).
# 3. eps_i <- clip(eps_i - eta (dL_i - mu), eps_min, eps_max) (eq. 15), applied the next time the
#    sample is drawn.
# 4. L_sync = mean_i sum_k (p_ik - p'_ik)(log p_ik - log p'_ik), a symmetric KL divergence with
#    gradients through both sides (eq. 11).
# 5. Loss = alpha mean(l) + (1 - alpha) mean(l') + lambda L_sync (eq. 12).

# %%
report.md(report.source_block(M.DPAAT.batch_loss) + "\n\n" + report.source_block(M.DPAAT.step_length)
          + "\n\n" + report.source_block(M.sync_loss))

# %% [markdown]
# The configuration of the DPAAT runs of this profile (`None` for eta and eps_max means
# eps0 per nat and 2 eps0; the column "in use" gives the values the method object resolves):

# %%
dpaat_method = M.build_method(dpaat_cfg.method, 1)
method_table = pd.Series({k: v for k, v in dpaat_cfg.method.to_dict().items() if k != "attack"},
                         name="DPAAT").to_frame()
method_table["in use"] = method_table["DPAAT"]
method_table.loc["eta", "in use"] = dpaat_method.eta
method_table.loc["eps_max", "in use"] = dpaat_method.eps_max
method_table

# %% [markdown]
# ### A worked example with the library's functions
#
# Five samples whose attack raised their loss by different amounts, all starting at eps0, one
# update of eq. 15 (`DPAAT.step_length` plus the clip), and the synchronisation loss of two
# small logit vectors (`sync_loss`):

# %%
dpaat = M.DPAAT(dpaat_cfg.method, n_train=5)
dl = torch.tensor([0.05, 0.2, 0.4, 0.9, 1.6])
mu = dl.mean()
new_eps = (dpaat.eps + dpaat.step_length(dl, mu)).clamp(dpaat_cfg.method.eps_min, dpaat.eps_max)
pd.DataFrame({"dL_i": dl.numpy(), "dL_i - mu": (dl - mu).numpy(), "eps_i before": dpaat.eps.numpy(),
              "eps_i after": new_eps.numpy()}).round(4)

# %%
clean_logits = torch.tensor([[2.0, 0.5, -1.0], [0.2, 0.1, 0.0]])
adv_logits = torch.tensor([[0.5, 1.5, -1.0], [0.2, 0.1, 0.0]])
report.md(f"sync_loss per sample: {[round(v, 4) for v in M.sync_loss(clean_logits, adv_logits).tolist()]} "
          f"(zero when the clean and adversarial predictions agree, as in the second sample). "
          f"The batch mean of dL is mu = {mu.item():.3f}: the two samples above it shrink, the three below grow.")

# %% [markdown]
# ### The ablations (paper Fig. 3, chapter 7)
#
# - D-A: dynamic adaptation only (lambda = 0).
# - D-B: synchronisation loss only (fixed eps0).
# - D-(A+B): both, i.e. DPAAT.

# %%
report.md(report.source_block(M.build_method))

# %% [markdown]
# ## What the paper left unstated, and our choices
#
# | what | paper | this book (default; other readings are parameters) |
# |---|---|---|
# | attack norm and radius | training: "0.5 of [lost symbol]", 7 steps of 0.15, norm lost; evaluation: not stated | PGD-L2 eps0 = 0.5 for training and 20/50-PGD; Linf 2/255 for FGSM and I-FGSM |
# | eta in eq. 15 | not stated | eps0 per nat (`MethodConfig.eta`) |
# | radius bounds | not stated | [0, 2 eps0] (`eps_min`, `eps_max`) |
# | mu | batch mean (eq. 13-14) | batch mean; previous-epoch mean as an option (`mu="epoch"`) |
# | lambda in eq. 12 | not stated | 1.0 (`lam`) |
# | AMAT's threshold | not stated for classification | mean validation CE of a trained STD model (`amat_z`) |
# | augmentation | not stated | horizontal and vertical flips |
# | validation / early stopping | "early stopping ... of 5 iterations on the validation dataset"; the validation set and the metric are not stated | 80 of the 800 training images per class; patience 5 in the paper profile (the banner gives each profile's); the checkpoint kept is the one with the **lowest clean validation cross-entropy** (`select_on="val_loss"`; `"val_acc"` is the option), because accuracy on 80 images per class moves in steps of 0.4 points |
# | schedule | "trained for 10 iterations alone", then "50 iterations" of all layers (we read iterations as epochs) | from scratch: up to 60 epochs in method.md, capped by each profile (banner) |
# | initialisation | ImageNet fine-tuning | from scratch (no download possible here); `-p weights imagenet` (torchvision's ImageNet weights) or a folder of local files switches to the paper's two-phase fine-tuning, InceptionV3 with its weights' [-1, 1] input scaling |

# %% [markdown]
# ## What it shows
#
# The code above is what every run of the book executed (the page shows the installed
# library's source). The worked example checks the direction of eq. 15 as we read it: samples
# whose loss rose more than the batch average (fragile) get a smaller radius, the others a
# larger one, by a length proportional to the distance from the average.
