"""Figures: matplotlib figures, closed in pyplot before they are returned, so a page shows each once."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .. import experiment, profiles
from ..evaluation import CLEAN
from ..methods import LABELS, MethodConfig
from ..metrics import MARP_ATTACK
from .common import ABLATION_LABELS, CURVE_ATTACK, first_seed, fmt, method_key, summary


def new_figure(w: float, h: float):
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(w, h), dpi=100, layout="constrained")


def closed(fig):
    """Close the figure in pyplot (so Jupyter does not draw it by itself at the end of the cell)
    and return it: it is shown once, as the cell's value."""
    import matplotlib.pyplot as plt

    plt.close(fig)
    return fig


METHOD_COLORS = {"STD": "#7f7f7f", "AT": "#1f77b4", "SAT": "#2ca02c", "AMAT": "#9467bd", "DPAAT": "#d62728",
                 "D-A": "#ff7f0e", "D-B": "#17becf"}


"""One colour per method, the same in every figure."""


def plot_dpaat_rule(eps0: float = 0.5, eta: float | None = None, eps_max: float | None = None):
    """Eq. 15 as implemented (``methods.DPAAT.step_length`` and its clip): the change of a sample's
    radius against its loss change relative to the batch mean, dL - mu, and the new radius of a
    sample that had eps0, a small and the largest radius."""
    import torch

    from ..methods import DPAAT

    cfg = MethodConfig(name="dpaat", eta=eta)
    meth = DPAAT(cfg, n_train=1)
    eps_max = meth.eps_max if eps_max is None else eps_max
    x = torch.linspace(-1.5, 1.5, 301)
    step = meth.step_length(x, 0.0).numpy()
    fig = new_figure(9, 3.4)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(x, step, color="#d62728")
    ax1.axhline(0, color="k", lw=0.6)
    ax1.axvline(0, color="k", lw=0.6)
    ax1.fill_between(x, step, 0, where=x.numpy() > 0, color="#d62728", alpha=0.15, label="fragile: dL > mu, shrink")
    ax1.fill_between(x, step, 0, where=x.numpy() < 0, color="#1f77b4", alpha=0.15, label="stable: dL < mu, grow")
    ax1.set_xlabel("dL_i - mu  (loss increase under attack minus its batch mean, nats)")
    ax1.set_ylabel("change of radius eps_i")
    ax1.set_title(f"eq. 15: -eta (dL_i - mu), eta = {meth.eta:g}")
    ax1.legend(fontsize=8, loc="upper right")
    for start, ls in ((0.1 * eps0, ":"), (eps0, "-"), (eps_max, "--")):
        new = np.clip(start + step, cfg.eps_min, eps_max)
        ax2.plot(x, new, ls=ls, color="k", label=f"eps_i before = {start:g}")
    ax2.axhline(eps0, color="#1f77b4", lw=0.6, label=f"eps0 = {eps0:g} (every radius's start)")
    ax2.set_ylim(-0.05, 1.6 * eps_max)  # headroom for the legend above the curves
    ax2.set_xlabel("dL_i - mu (nats)")
    ax2.set_ylabel("eps_i after one update")
    ax2.set_title(f"clipped to [{cfg.eps_min:g}, {eps_max:g}] (eps_max = 2 eps0)")
    ax2.legend(fontsize=7, loc="upper center", ncol=2)
    return closed(fig)


def plot_split_counts(summary_: dict):
    """Images per class and side (lesion-aware split), and test images whose lesion also has an image
    in training under each split."""
    fig = new_figure(9, 3.2)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
    s = summary_[summary_["used"]]
    classes = list(summary_["data"]["classes"])
    sides = ("train", "val", "test")
    width = 0.8 / len(sides)
    for j, side in enumerate(sides):
        vals = [s["counts"][side][c] for c in classes]
        bars = ax1.bar(np.arange(len(classes)) + (j - 1) * width, vals, width, label=side)
        ax1.bar_label(bars, fontsize=7)
    ax1.set_xticks(range(len(classes)), classes)
    ax1.set_ylabel("images")
    ax1.set_title(f"split used by the runs ({summary_['used'].replace('_', '-')})")
    ax1.legend(fontsize=8)
    names = ["lesion-aware", "image-level"]
    vals = [summary_["lesion_aware"]["test_images_with_lesion_in_training"],
            summary_["image_level"]["test_images_with_lesion_in_training"]]
    bars = ax2.bar(names, vals, color=["#2ca02c", "#d62728"])
    ax2.bar_label(bars, fontsize=8)
    ax2.set_ylabel("test images")
    ax2.set_title("test images whose lesion\nis also in train/val")
    return closed(fig)


def plot_examples(images: np.ndarray, labels: Sequence[int], classes: Sequence[str], ids: Sequence[str] = ()):
    """A grid of example images, one row per class."""
    per = max(sum(1 for l in labels if l == k) for k in range(len(classes)))
    fig = new_figure(1.6 * per, 1.7 * len(classes))
    axes = np.atleast_2d(fig.subplots(len(classes), per, squeeze=False))
    for ax in axes.ravel():
        ax.axis("off")
    col = {k: 0 for k in range(len(classes))}
    for i, (img, l) in enumerate(zip(images, labels)):
        ax = axes[l, col[l]]
        ax.imshow(img)
        ax.set_title(f"{classes[l]}" + (f"\n{ids[i]}" if ids else ""), fontsize=7)
        col[l] += 1
    return closed(fig)


def plot_metric_bars(results: Sequence[experiment.RunResult], metrics: Sequence[str], scale: float = 100.0,
                     ylabel: str = "accuracy (%)", paper: pd.DataFrame | None = None, paper_group: str = "all_six"):
    """Grouped bars: one group per metric, one bar per method (seed mean, error bar = std when several
    seeds), one panel per model; the paper's ``paper_group`` average as black ticks where given."""
    s = summary(results, metrics)
    models = list(dict.fromkeys(s.index.get_level_values("model")))
    colors = METHOD_COLORS
    fig = new_figure(max(6, 1.3 * len(metrics) + 2), 3.3 * len(models))
    axes = np.atleast_1d(fig.subplots(len(models), 1, squeeze=False).ravel())
    for ax, model in zip(axes, models):
        sub = s.xs(model, level="model")
        meths = sorted(sub.index, key=method_key)
        width = 0.8 / len(meths)
        paper_label = f"paper ({paper_group})"
        for j, m in enumerate(meths):
            xs = np.arange(len(metrics)) + (j - (len(meths) - 1) / 2) * width
            vals = [scale * sub.loc[m, ("mean", c)] for c in metrics]
            err = [scale * sub.loc[m, ("std", c)] for c in metrics] if int(sub.loc[m, ("n", "")]) > 1 else None
            ax.bar(xs, vals, width, yerr=err, label=m, color=colors.get(m))
            if paper is not None:
                p = paper[(paper["group"] == paper_group) & (paper["method"] == m)]
                if len(p):
                    pv = [float(p[c].iloc[0]) for c in metrics]  # same scale as the bars
                    ax.scatter(xs, pv, marker="_", s=120, color="k", zorder=3, label=paper_label)
                    paper_label = None  # one legend entry
        ax.set_xticks(range(len(metrics)), metrics)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.2 * scale)  # headroom for the legend above the bars
        ax.set_title(f"{model} (ours)")
        ax.legend(fontsize=7, ncol=len(meths) + 1, loc="upper center")
    return closed(fig)


def plot_eps_curves(curves: dict, title: str = ""):
    """Robust accuracy against eps, one line per method (the mean over seeds, with the range of the seeds
    shaded when there are several), one panel per model."""
    models = list(dict.fromkeys(k[0] for k in curves))
    colors = METHOD_COLORS
    fig = new_figure(4.6 * max(1, len(models)), 3.4)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(models)), squeeze=False).ravel())
    for ax, model in zip(axes, models):
        methods = sorted({k[1] for k in curves if k[0] == model}, key=method_key)
        for meth in methods:
            runs = [c for k, c in curves.items() if k[0] == model and k[1] == meth]
            scale = 255 if runs[0]["norm"] == "linf" else 1
            eps = np.array(runs[0]["eps"]) * scale
            acc = 100 * np.array([c["acc"] for c in runs if len(c["acc"]) == len(eps)])
            ax.plot(eps, acc.mean(0), marker="o", color=colors.get(meth),
                    label=meth + (f" ({len(acc)} seeds)" if len(acc) > 1 else ""))
            if len(acc) > 1:
                ax.fill_between(eps, acc.min(0), acc.max(0), color=colors.get(meth), alpha=0.15, lw=0)
        norm = next(c["norm"] for k, c in curves.items() if k[0] == model)
        ax.set_xlabel("eps x 255 (Linf)" if norm == "linf" else "eps (L2)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{model}: {CURVE_ATTACK[norm]} {title}")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7)
    return closed(fig)


def plot_confusion_grid(results: Sequence[experiment.RunResult], model: str,
                        attacks: Sequence[str] = (CLEAN, MARP_ATTACK), seed: int | None = None):
    """Confusion matrices of ``model``: rows attacks (clean, 20-PGD), columns methods. Colour = share of
    the true class (row-normalised), text = count."""
    runs = [r for r in results if r.config.model == model and (seed is None or r.config.train.seed == seed)]
    if seed is None and runs:
        s0 = min(r.config.train.seed for r in runs)
        runs = [r for r in runs if r.config.train.seed == s0]
    runs = sorted(runs, key=lambda r: method_key(r.config.method.label))
    classes = runs[0].config.data.classes
    fig = new_figure(2.3 * len(runs), 2.3 * len(attacks) + 0.3)
    axes = fig.subplots(len(attacks), len(runs), squeeze=False)
    for i, att in enumerate(attacks):
        for j, r in enumerate(runs):
            cm = np.asarray(r.metrics["confusion"][att], dtype=float)
            share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
            ax = axes[i, j]
            ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
            for a in range(len(classes)):
                for b in range(len(classes)):
                    ax.text(b, a, f"{int(cm[a, b])}", ha="center", va="center", fontsize=8,
                            color="white" if share[a, b] > 0.6 else "black")
            ax.set_xticks(range(len(classes)), classes, fontsize=7)
            ax.set_yticks(range(len(classes)), classes, fontsize=7)
            acc = np.trace(cm) / max(cm.sum(), 1)
            ax.set_title(f"{r.config.method.label}, {att}\nacc {100 * acc:.1f}%", fontsize=8)
            if j == 0:
                ax.set_ylabel("true")
            if i == len(attacks) - 1:
                ax.set_xlabel("predicted")
    seeds = sorted({r.config.train.seed for r in runs})
    fig.suptitle(f"{model}, seed {', '.join(map(str, seeds))}: confusion matrices (colour: share of the true class)",
                 fontsize=9)
    return closed(fig)


def class_recalls(results: Sequence[experiment.RunResult], model: str,
                  attacks: Sequence[str] = (CLEAN, MARP_ATTACK)) -> pd.DataFrame:
    """One row per (attack, method, seed) of ``model``: the recall of each class (percent), the worst
    class and the spread (best minus worst class, points), from the stored confusion matrices."""
    rows = []
    for r in sorted(results, key=lambda r: (method_key(r.config.method.label), r.config.train.seed)):
        if r.config.model != model:
            continue
        for att in attacks:
            cm = np.asarray(r.metrics["confusion"][att], dtype=float)
            rec = 100 * np.diag(cm) / np.maximum(cm.sum(1), 1)
            rows.append({"attack": att, "method": r.config.method.label, "seed": r.config.train.seed,
                         **{f"recall {c}": v for c, v in zip(r.config.data.classes, rec)},
                         "worst class": rec.min(), "spread (max - min)": rec.max() - rec.min()})
    return pd.DataFrame(rows)


def confusion_balance(results: Sequence[experiment.RunResult], model: str,
                      attacks: Sequence[str] = (CLEAN, MARP_ATTACK)) -> pd.DataFrame:
    """The paper's 'more even diagonal' made a number: per attack and method, each class's recall, the
    worst class and the spread (max - min), as mean ± std over the seeds (percent, points)."""
    t = class_recalls(results, model, attacks)
    if t.empty:
        return t
    cols = [c for c in t.columns if c not in ("attack", "method", "seed")]
    g = t.groupby(["attack", "method"], sort=False)
    mean, std, n = g[cols].mean(), g[cols].std(ddof=1), g.size()
    out = pd.DataFrame({c: [fmt(m, sd, k, scale=1.0) for m, sd, k in zip(mean[c], std[c], n)] for c in cols},
                       index=mean.index)
    out["seeds"] = n
    order = {a: k for k, a in enumerate(attacks)}
    return out.loc[sorted(out.index, key=lambda k: (order[k[0]], method_key(k[1])))]


def confusion_balance_findings(results: Sequence[experiment.RunResult], model: str,
                               attacks: Sequence[str] = (CLEAN, MARP_ATTACK)) -> str:
    """The reading of :func:`confusion_balance` for ``model`` (Markdown): per attack, which method has the
    highest worst-class recall and the smallest spread on the seed means (ties named as ties), and in how
    many seeds DPAAT's spread is the smallest, the paper's claim."""
    t = class_recalls(results, model, attacks)
    if t.empty:
        return f"No runs of {model}."
    parts = []
    for att in attacks:
        sub = t[t["attack"] == att]
        means = sub.groupby("method", sort=False)[["worst class", "spread (max - min)"]].mean()

        def best(col, pick):  # every method within 0.05 points of the best: a tie is named as one
            v = means[col].max() if pick == "max" else means[col].min()
            return " and ".join(means.index[(means[col] - v).abs() < 0.05]), v

        worst_m, worst_v = best("worst class", "max")
        spread_m, spread_v = best("spread (max - min)", "min")
        seeds = sorted(sub["seed"].unique())
        wins = sum(sub[sub["seed"] == k].set_index("method")["spread (max - min)"].idxmin() == "DPAAT"
                   for k in seeds if "DPAAT" in set(sub[sub["seed"] == k]["method"]))
        dp = means.loc["DPAAT"] if "DPAAT" in means.index else None
        text = (f"{'clean' if att == CLEAN else 'under ' + att}: highest worst-class recall {worst_m} "
                f"({worst_v:.1f}%), smallest spread {spread_m} ({spread_v:.1f} points)")
        if dp is not None:
            text += (f"; DPAAT {dp['worst class']:.1f}% and {dp['spread (max - min)']:.1f} points, the smallest spread "
                     f"in {wins} of its {len(seeds)} seed(s)")
        parts.append(text)
    return f"On {model} (seed means): " + "; ".join(parts) + "."


def plot_ablation(results: Sequence[experiment.RunResult], metrics: Sequence[str] = ("GAcc", "20-PGD")):
    """Paper Fig. 3: GAcc and 20-PGD RAcc of AT, D-A, D-B, D-(A+B) = DPAAT, one panel per model."""
    s = summary(results, metrics)
    models = list(dict.fromkeys(s.index.get_level_values("model")))
    labels = [ABLATION_LABELS[m] for m in profiles.ABLATION_METHODS]
    fig = new_figure(4.8 * len(models), 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(models), squeeze=False).ravel())
    colors = ["#1f77b4", "#ff7f0e", "#17becf", "#d62728"]
    for ax, model in zip(axes, models):
        sub = s.xs(model, level="model")
        width = 0.8 / len(labels)
        for j, (m, lab) in enumerate(zip(profiles.ABLATION_METHODS, labels)):
            key = LABELS[m]
            if key not in sub.index:
                continue
            xs = np.arange(len(metrics)) + (j - (len(labels) - 1) / 2) * width
            vals = [100 * sub.loc[key, ("mean", c)] for c in metrics]
            err = [100 * sub.loc[key, ("std", c)] for c in metrics] if int(sub.loc[key, ("n", "")]) > 1 else None
            bars = ax.bar(xs, vals, width, yerr=err, label=lab, color=colors[j])
            ax.bar_label(bars, fmt="%.1f", fontsize=6)
        ax.set_xticks(range(len(metrics)), ["GAcc (clean)" if c == "GAcc" else f"RAcc {c}" for c in metrics])
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 125)  # headroom above the bars for the legend, which would cover the RAcc bars below
        ax.set_yticks(range(0, 101, 20))
        ax.set_title(f"{model}: ablation (ours)")
        ax.legend(fontsize=7, loc="upper center", ncol=len(labels))
    return closed(fig)


def plot_radius_heatmaps(results: Sequence[experiment.RunResult]):
    """Per-epoch distribution of the per-sample radii (epoch x radius bin; colour = share of training
    images) for every first-seed run that keeps radii (AMAT, DPAAT, D-A): a row per model, a column per
    method."""
    runs = [r for r in first_seed(results) if r.history["epochs"] and "radius_hist" in r.history["epochs"][0]
            and r.config.method.name != "d-b"]
    models = list(dict.fromkeys(r.config.model for r in runs))
    methods = sorted({r.config.method.label for r in runs}, key=method_key)
    fig = new_figure(4.2 * max(1, len(methods)), 3.2 * max(1, len(models)))
    axes = fig.subplots(max(1, len(models)), max(1, len(methods)), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r in runs:
        ax = axes[models.index(r.config.model), methods.index(r.config.method.label)]
        ax.set_axis_on()
        ep = r.history["epochs"]
        hist = np.array([e["radius_hist"] for e in ep], dtype=float)
        share = hist / np.maximum(hist.sum(1, keepdims=True), 1)
        top = ep[0]["radius_hist_max"]
        im = ax.imshow(share.T, origin="lower", aspect="auto", cmap="viridis", vmin=0,
                       extent=(0.5, len(ep) + 0.5, 0, top))
        ax.plot(range(1, len(ep) + 1), [e["radius_mean"] for e in ep], color="white", lw=1, label="mean")
        ax.axhline(r.config.method.eps0, color="red", lw=0.8, ls="--", label="eps0")
        ax.set_xlabel("epoch")
        ax.set_ylabel("per-sample radius eps_i (L2)")
        ax.set_title(f"{r.config.model}: {r.config.method.label}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        fig.colorbar(im, ax=ax, label="share of training images")
    return closed(fig)


def plot_training_curves(results: Sequence[experiment.RunResult]):
    """Training loss, clean validation accuracy and clean validation cross-entropy per epoch, one line per
    method, one row per model. The kept checkpoint is starred in both validation panels; its metric
    (the run's ``select_on``, the lowest cross-entropy by default) is named in the titles."""
    models = list(dict.fromkeys(r.config.model for r in results))
    colors = METHOD_COLORS
    fig = new_figure(14, 3.2 * len(models))
    axes = fig.subplots(len(models), 3, squeeze=False)
    chosen = {r.config.train.select_on for r in results}
    by = ("lowest validation CE" if chosen == {"val_loss"} else "highest validation accuracy"
          if chosen == {"val_acc"} else "each run's select_on")
    for i, model in enumerate(models):
        labelled = set()  # one legend entry per method; its seeds share the colour
        runs = [r for r in results if r.config.model == model]
        for r in sorted(runs, key=lambda r: method_key(r.config.method.label)):
            ep = r.history["epochs"]
            e = [x["epoch"] for x in ep]
            method = r.config.method.label
            lab = "_nolegend_" if method in labelled else method
            labelled.add(method)
            c = colors.get(method)
            axes[i, 0].plot(e, [x.get("train_loss", np.nan) for x in ep], color=c, label=lab, lw=1)
            axes[i, 1].plot(e, [100 * x["val_acc"] for x in ep], color=c, label=lab, lw=1)
            axes[i, 2].plot(e, [x.get("val_loss", np.nan) for x in ep], color=c, label=lab, lw=1)
            b = r.history.get("best_epoch")
            if b:
                axes[i, 1].scatter([b], [100 * ep[b - 1]["val_acc"]], color=c, marker="*", s=60, zorder=3)
                axes[i, 2].scatter([b], [ep[b - 1].get("val_loss", np.nan)], color=c, marker="*", s=60, zorder=3)
        n_seeds = len({r.config.train.seed for r in results if r.config.model == model})
        axes[i, 0].set_title(f"{model}: training loss (own objective; one line per seed, {n_seeds})", fontsize=9)
        axes[i, 1].set_title(f"{model}: validation accuracy (clean; * = kept, by {by})", fontsize=9)
        axes[i, 2].set_title(f"{model}: validation cross-entropy (clean; * = kept)", fontsize=9)
        for ax in axes[i]:
            ax.set_xlabel("epoch")
        axes[i, 0].legend(fontsize=7)
        axes[i, 0].set_ylabel("loss")
        axes[i, 1].set_ylabel("%")
        axes[i, 2].set_ylabel("mean CE (nats)")
    return closed(fig)


def plot_gradcam_grid(cams: dict[str, dict], classes: Sequence[str], model: str = ""):
    """Paper Fig. 4: one row per image (grouped by class); columns: the image, then each method's
    Grad-CAM overlay (``gradcam.overlay``); the lesion mask outline where known."""
    from .. import gradcam

    methods = list(cams)
    first = cams[methods[0]]
    n = len(first["image_ids"])
    fig = new_figure(1.9 * (len(methods) + 1), 1.9 * n + 0.4)
    axes = fig.subplots(n, len(methods) + 1, squeeze=False)
    for i in range(n):
        img = first["images"][i]
        lab = classes[int(first["labels"][i])]
        axes[i, 0].imshow(img)
        axes[i, 0].set_ylabel(f"{lab}\n{first['image_ids'][i]}", fontsize=7)
        masks = first.get("masks")
        if masks is not None:
            axes[i, 0].contour(np.asarray(masks[i], dtype=float), levels=[0.5], colors="w", linewidths=0.6)
        for j, m in enumerate(methods, start=1):
            c = cams[m]
            axes[i, j].imshow(gradcam.overlay(c["images"][i], c["cams"][i]))
            if c.get("energy_in_mask") is not None:
                axes[i, j].set_xlabel(f"in mask {float(c['energy_in_mask'][i]):.2f}", fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize=9)
    for j, m in enumerate(methods, start=1):
        axes[0, j].set_title(m, fontsize=9)
    fig.suptitle(f"Grad-CAM {model}".strip(), fontsize=10)
    return closed(fig)
