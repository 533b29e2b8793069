"""The training methods of method.md section 5 as small strategy objects.

Each method exposes ``loss(model, x, y, idx) -> (loss, logs)`` for one batch
(``idx`` are the training-set indices of the batch, so a method can keep one
radius per training image) and ``end_epoch() -> logs``. Per-sample state lives
on the object and travels with ``state_dict()`` so a run resumes exactly.

In the training loop a batch never waits for the device: the batch logs are
0-dim tensors (the loop sums them on the device and reads them once per epoch),
the per-sample radii live on the device of the batch, so ``idx`` is never copied
to the host, and the loop builds its methods without the checks that read a
batch's values (``check_values=False``; a user's own loop gets them by
default). Only AMAT syncs once per batch, to select the images it attacks.
``state_dict()`` holds CPU tensors whatever the device, so checkpoints move
between machines.

The training loop puts the model in train mode; the attacks switch it to eval
mode for their own forward passes and back (:func:`dpaat_lib.attacks.perturb`).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from .attacks import AttackSpec, check_unit_range, distance, training_attack

METHODS = ("std", "at", "sat", "amat", "dpaat", "d-a", "d-b")
LABELS = {"std": "STD", "at": "AT", "sat": "SAT", "amat": "AMAT", "dpaat": "DPAAT",
          "d-a": "D-A", "d-b": "D-B"}


@dataclass(frozen=True)
class MethodConfig:
    """Hyper-parameters of a method; defaults are method.md's.

    ``eta=None`` means eta = eps0 per nat; ``eps_max=None`` means 2 * eps0.
    ``mu``: "batch" (eq. 13-14, default) or "epoch" (mean loss change of the
    previous epoch). ``length``: "linear" (eta * |dL - mu|) or "normalized"
    (gamma * eps0 * |dL - mu| / max |dL - mu|). ``amat_z``: AMAT's threshold
    is mean + z * std of the STD model's validation CE.

    The ablations keep the fields of the DPAAT run they ablate, so that the two configurations differ in
    ``name`` only: "d-a" trains with lam = 0 whatever ``lam`` says, and "d-b" never uses ``eta``, ``mu``,
    ``length`` or ``gamma`` (its radius stays eps0). A stored ``config.json`` of an ablation records them as given.
    """

    name: str = "std"
    attack: AttackSpec = training_attack()
    alpha: float = 0.5
    lam: float = 1.0
    eta: float | None = None
    gamma: float = 1.0
    eps_min: float = 0.0
    eps_max: float | None = None
    mu: str = "batch"
    length: str = "linear"
    amat_z: float = 0.0

    def __post_init__(self):
        if self.name not in METHODS:
            raise ValueError(f"unknown method {self.name!r}; choose one of {METHODS}")
        if self.mu not in ("batch", "epoch"):
            raise ValueError(f"mu must be 'batch' or 'epoch', got {self.mu!r}")
        if self.length not in ("linear", "normalized"):
            raise ValueError(f"length must be 'linear' or 'normalized', got {self.length!r}")
        if not isinstance(self.attack, AttackSpec):
            raise TypeError(f"attack must be an AttackSpec (e.g. training_attack()), got {type(self.attack).__name__}")
        if self.name != "std" and self.attack.steps < 1:  # 0 steps return the clean images: STD in disguise
            raise ValueError(f"{self.name} trains on attacked images: its attack needs steps >= 1, got "
                             f"{self.attack.steps}")
        # Only values that can never make sense; the AttackSpec checks eps0 (attack.eps) >= 0 itself.
        if not _finite(self.alpha) or not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1] (the weight of the clean loss), got {self.alpha!r}")
        if not _finite(self.lam) or self.lam < 0:
            raise ValueError(f"lam must be finite and >= 0 (the weight of the sync loss; 0 is D-A), got {self.lam!r}")
        for field in ("eta", "gamma", "amat_z"):
            v = getattr(self, field)
            if v is not None and not _finite(v):
                raise ValueError(f"{field} must be a finite number, got {v!r}")
        for field in ("eta", "gamma"):  # a negative length reverses eq. 15: the fragile samples would grow
            v = getattr(self, field)
            if v is not None and v < 0:
                raise ValueError(f"{field} must be >= 0 (the step length of eq. 15; 0 keeps every radius at "
                                 f"eps0), got {v!r}")
        if not _finite(self.eps_min) or self.eps_min < 0:
            raise ValueError(f"eps_min must be finite and >= 0 (a radius), got {self.eps_min!r}")
        if self.eps_max is not None and not _finite(self.eps_max):
            raise ValueError(f"eps_max must be a finite number or None (2 * eps0), got {self.eps_max!r}")
        eps_max = 2 * self.attack.eps if self.eps_max is None else self.eps_max
        if self.eps_min > eps_max:
            which = (f"eps_max={self.eps_max!r}" if self.eps_max is not None
                     else f"eps_max=None (2 * eps0 = {eps_max!r})")
            raise ValueError(f"eps_min={self.eps_min!r} is above {which}: the radii are clipped to "
                             "[eps_min, eps_max], so give eps_min <= eps_max")
        if not self.eps_min <= self.attack.eps <= eps_max:
            # DPAAT's radii start at eps0: outside [eps_min, eps_max] the first epoch would attack beyond the
            # clip that every later epoch keeps, and the logged histogram over [0, eps_max] would miss them.
            raise ValueError(f"eps0 = {self.attack.eps!r} (the attack's eps) must lie in [eps_min, eps_max] = "
                             f"[{self.eps_min!r}, {eps_max!r}], where the radii start and stay: raise eps_max or "
                             "lower eps_min (None gives eps_max = 2 * eps0)")

    @property
    def eps0(self) -> float:
        return self.attack.eps

    @property
    def needs_threshold(self) -> bool:
        return self.name == "amat"

    @property
    def label(self) -> str:
        return LABELS[self.name]

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def per_sample_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each sample, shape (N,), from ``logits`` (N, K) and class indices ``y`` (N,)
    (long): ``F.cross_entropy(..., reduction="none")``. The methods average it themselves, and
    DPAAT and AMAT also keep one value per training image."""
    if not isinstance(logits, torch.Tensor):
        # torchvision's InceptionV3 and GoogLeNet return a named tuple with auxiliary logits in train mode.
        raise TypeError(f"the model returned a {type(logits).__name__}, not a tensor of logits (N, K): a model with "
                        "auxiliary outputs must return its logits alone; build it with aux_logits=False (as "
                        "dpaat_lib.models.build_model does) or wrap it to return the main output")
    return F.cross_entropy(logits, y, reduction="none")


def sync_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """Eq. 11: symmetric KL between clean and adversarial softmax outputs, per sample.

    sum_k (p_k - p'_k)(log p_k - log p'_k); gradients flow through both sides.
    """
    logp, logq = F.log_softmax(logits_clean, 1), F.log_softmax(logits_adv, 1)
    return ((logp.exp() - logq.exp()) * (logp - logq)).sum(1)


def forward_pair(model, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(model(a), model(b)), in that order: through one compiled graph when the training loop compiles
    (:class:`dpaat_lib.training.CompiledNet`), else two plain calls."""
    pair = getattr(model, "forward_pair", None)
    return pair(a, b) if pair is not None else (model(a), model(b))


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Share of correct predictions as a 0-dim tensor (a batch log; no host sync)."""
    return (logits.argmax(1) == y).float().mean().detach()


def radius_summary(radii: torch.Tensor, eps_max: float, bins: int = 20) -> dict:
    """Distribution of per-sample radii for the training log (histogram on [0, eps_max])."""
    r = radii.detach().float().cpu()
    hist = torch.histc(r, bins=bins, min=0.0, max=eps_max)
    q = torch.quantile(r, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95]))
    return {"radius_mean": r.mean().item(), "radius_std": r.std().item(), "radius_min": r.min().item(),
            "radius_max": r.max().item(), "radius_quantiles": [round(v, 6) for v in q.tolist()],
            "radius_hist": hist.int().tolist(), "radius_hist_max": eps_max}


def check_batch(x, y, idx, n_train: int, *, values: bool = True) -> None:
    """Raise a clear error unless (``x``, ``y``, ``idx``) is a batch that :meth:`Method.loss` can train on.

    Always (no device sync): ``x`` a float tensor (N, C, H, W), ``y`` a long tensor (N,), ``idx`` an
    int64 or int32 tensor (N,). With ``values``: ``x`` finite and in [0, 1] (one sync) and every ``idx`` in
    [0, ``n_train``) (one more), so that an out-of-range index is named here and not left to an indexing
    error inside the method (on a GPU, a device-side assert that kills the process).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        what = f"a {x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x must be a float tensor of images (N, C, H, W) in [0, 1], got {what}; scale uint8 "
                        "images with dpaat_lib.training.to_float(x)")
    n = x.shape[0]
    if not isinstance(y, torch.Tensor) or y.shape != (n,) or y.dtype != torch.long:
        what = f"a {y.dtype} tensor of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise TypeError(f"y must be a long tensor of class indices of shape (N,) = ({n},), got {what}")
    # int64 or int32: torch indexes with a bool or uint8 tensor as with a mask, not with indices.
    if not isinstance(idx, torch.Tensor) or idx.shape != (n,) or idx.dtype not in (torch.int64, torch.int32):
        what = (f"a {idx.dtype} tensor of shape {tuple(idx.shape)}" if isinstance(idx, torch.Tensor)
                else f"a {type(idx).__name__}; pass torch.as_tensor(idx)")
        raise TypeError(f"idx must be an int64 (or int32) tensor of shape (N,) = ({n},), the batch's indices into "
                        f"the training set (idx.long() converts), got {what}")
    if not values:
        return
    check_unit_range(x, "x")
    if n:
        lo, hi = torch.stack(torch.aminmax(idx)).tolist()
        if lo < 0 or hi >= n_train:
            raise IndexError(f"idx must lie in [0, n_train) = [0, {n_train}) (the batch's indices into the "
                             f"training set the method was built for), got values in [{lo}, {hi}]: build the "
                             "method with n_train = the size of the training set")


class Method:
    """Base: no per-sample state. Subclasses override :meth:`batch_loss` (:meth:`loss` checks, then calls it)."""

    # Whether loss() runs the model on batches whose size changes from batch to batch (AMAT's attacked
    # sub-batch): training.CompiledNet then compiles for every size instead of the full batch's.
    varying_batch = False
    # Whether loss() reads the batch's values to check them (a device sync each): see check_batch.
    check_values = True
    # Whether one full-batch training step of this method can be captured as a CUDA graph and replayed
    # (training.CapturedStep): loss() reads no value on the host (with check_values off), and every state it
    # keeps between batches is a tensor updated in place, never a Python number or a tensor rebound,
    # since a replay runs the captured kernels and none of the Python.
    graph_safe = True

    def __init__(self, config: MethodConfig, n_train: int, generator: torch.Generator | None = None):
        self.config = config
        self.n_train = n_train
        self.generator = generator

    def attack(self, model, x, y, eps=None):
        # loss() has checked x (or the training loop built it from uint8 / 255) and the radii are clamped
        # to [eps_min, eps_max], so the value checks of the public attacks (a host sync each) are skipped.
        return self.config.attack(model, x, y, eps=eps, generator=self.generator, check_values=False)

    def loss(self, model, x, y, idx):
        """The training loss of one batch and its logs: ``(loss, logs)``.

        ``x``: images (N, C, H, W) as floats in [0, 1] (the models normalise inside; the training
        loop scales uint8 by 1/255). ``y``: class indices (N,), long. ``idx``: the batch's indices
        into the training set (an int64 or int32 tensor (N,), each in [0, ``n_train``)), so that a method can
        keep one radius per training image (AMAT, DPAAT); an index may repeat in a batch (the
        balanced sampler draws with replacement): the image's tables then keep its last visit
        (:meth:`RadiusTable.last_visit`). ``model`` should be in train mode, as the training loop
        leaves it; the attacks switch it to eval mode for their own passes and back.

        Checked before anything runs (:func:`check_batch`): the shapes and dtypes always, and, while
        ``check_values`` is True (the default), that ``x`` is finite and in [0, 1] and ``idx`` in range.
        ImageNet-normalised images or images in 0-255 would otherwise give every attack a wrong radius
        without an error. The value checks cost a device sync each batch; the training loop builds
        valid batches by construction and turns them off (``build_method(..., check_values=False)``).

        ``loss`` is a 0-dim tensor to call ``backward()`` on; ``logs`` maps names to 0-dim tensors
        (detached) or numbers, summed by the loop and read once per epoch.

        State: DPAAT updates the radii of ``idx`` (and its epoch statistics) and AMAT records
        what its attack saw, inside this call, before any backward or optimiser step, and also
        under ``torch.no_grad()``: calling ``loss`` to evaluate a batch changes the method's
        state. Work on a ``copy.deepcopy`` of the method (or restore ``state_dict()``) for that.
        """
        check_batch(x, y, idx, self.n_train, values=self.check_values)
        return self.batch_loss(model, x, y, idx)

    def batch_loss(self, model, x, y, idx):  # pragma: no cover - abstract
        """:meth:`loss` without its checks: what each method computes."""
        raise NotImplementedError

    def end_epoch(self) -> dict:
        return {}

    def radii(self) -> torch.Tensor | None:
        """A copy of the per-sample radii (one per training image), or None for a method without any."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class STD(Method):
    """Standard training: mean CE(x)."""

    def batch_loss(self, model, x, y, idx):
        logits = model(x)
        loss = per_sample_ce(logits, y).mean()
        return loss, {"loss": loss.detach(), "acc": accuracy(logits, y)}


class AT(Method):
    """Madry AT: mean CE(x') with x' = PGD within eps0."""

    def batch_loss(self, model, x, y, idx):
        x_adv = self.attack(model, x, y)
        logits = model(x_adv)
        loss = per_sample_ce(logits, y).mean()
        return loss, {"loss": loss.detach(), "adv_acc": accuracy(logits, y)}


class SAT(Method):
    """Goodfellow's mixed objective: alpha * mean CE(x) + (1 - alpha) * mean CE(x')."""

    def batch_loss(self, model, x, y, idx):
        a = self.config.alpha
        x_adv = self.attack(model, x, y)
        logits, logits_adv = forward_pair(model, x, x_adv)
        loss = a * per_sample_ce(logits, y).mean() + (1 - a) * per_sample_ce(logits_adv, y).mean()
        return loss, {"loss": loss.detach(), "acc": accuracy(logits, y), "adv_acc": accuracy(logits_adv, y)}


class RadiusTable(Method):
    """A method with one radius per training image (AMAT, DPAAT), kept on ``device`` (by default the
    generator's: the training loop makes it on the device it trains on)."""

    def __init__(self, config, n_train, generator=None, init: float = 0.0, device=None):
        super().__init__(config, n_train, generator)
        self.device = torch.device(device if device is not None else (generator.device if generator else "cpu"))
        self.eps = torch.full((n_train,), float(init), device=self.device)

    @property
    def eps_max(self) -> float:
        return 2 * self.config.eps0 if self.config.eps_max is None else self.config.eps_max

    def radii(self) -> torch.Tensor:
        # A copy: the table is updated in place every batch, so a caller keeping radii() per epoch would
        # otherwise hold one tensor that keeps changing, and writing into it would change the training.
        return self.eps.detach().clone()

    def radius_log(self) -> dict:
        return radius_summary(self.eps, self.eps_max)

    def last_visit(self, i: torch.Tensor) -> torch.Tensor:
        """For each position of the batch indices ``i`` (on this method's device), the position of the
        last occurrence of its index in ``i``: ``arange(len(i))`` where no index repeats.

        The balanced sampler draws with replacement, so an image can occur twice in a batch. A table
        written as ``table[i] = values`` then gets one of the two values, and which one is undefined
        (on a GPU it can change from run to run). Writing ``values[last_visit(i)]`` instead gives every
        occurrence the last visit's value: the write is the same whatever the order, and the image
        keeps what its last visit in the batch measured, as it would across batches."""
        pos = torch.arange(i.numel(), device=self.device)
        last = torch.full((self.n_train,), -1, dtype=torch.long, device=self.device)
        return last.scatter_reduce(0, i, pos, "amax")[i]  # max of integers: the same in any order

    def _table(self, t: torch.Tensor) -> torch.Tensor:
        """A stored tensor as a table of this method: a copy on its device."""
        return t.detach().clone().to(self.device)

    def state_dict(self):
        return {"eps": self.eps.cpu().clone()}

    def load_state_dict(self, state):
        self.eps = self._table(state["eps"])


class AMAT(RadiusTable):
    """Adaptive-margin AT (Ma & Liang 2022), adapted to classification.

    Radii start at delta = eps0 / 10 and are capped at 2 * eps0. The threshold
    T comes from an already trained STD model of the same architecture (mean
    per-sample validation CE, + z * std as an option) and stays fixed. Only
    correctly classified samples are attacked; after each epoch their radius
    grows by delta if CE(x') <= T, else moves half-way to ||x' - x|| (in the attack's norm). A sample
    whose CE(x') or distance is not finite keeps its radius; the epoch's log
    counts them (``nonfinite_adv``).
    """

    varying_batch = True  # the attacked sub-batch: the correctly classified images of each batch
    graph_safe = False  # its size is read on the host every batch (the one sync)

    def __init__(self, config, n_train, generator=None, threshold: float | None = None, device=None):
        super().__init__(config, n_train, generator, init=config.eps0 / 10, device=device)
        if threshold is None:
            raise ValueError("AMAT needs the threshold of a trained STD model of the same architecture: "
                             "train the STD run first (dpaat_lib.grid orders this for you) and pass "
                             "threshold=<its validation CE>")
        # NaN would silently shrink every radius (CE <= NaN is never true); inf (every radius grows) is allowed.
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or math.isnan(threshold):
            raise ValueError(f"AMAT's threshold must be a number (its STD run's mean validation CE + amat_z x their "
                             f"std), got {threshold!r}: train that STD run again if it diverged")
        self.threshold = float(threshold)
        self.delta = config.eps0 / 10
        # What the last visit of each sample saw; applied at the end of the epoch.
        self.seen = torch.zeros(n_train, dtype=torch.bool, device=self.device)
        self.adv_loss = torch.zeros(n_train, device=self.device)
        self.adv_dist = torch.zeros(n_train, device=self.device)
        self.nonfinite = torch.zeros(n_train, dtype=torch.bool, device=self.device)

    def batch_loss(self, model, x, y, idx):
        a = self.config.alpha
        logits = model(x)
        ce = per_sample_ce(logits, y)
        correct = (logits.argmax(1) == y).detach()
        adv_term = torch.zeros((), device=x.device)
        i = idx.to(self.device)
        # What this batch saw of each of its images: attacked (correct) with a finite result, or not finite.
        ok, bad = (torch.zeros(i.shape[0], dtype=torch.bool, device=self.device) for _ in range(2))
        adv_loss, adv_dist = (torch.zeros(i.shape[0], device=self.device) for _ in range(2))
        sel = correct.nonzero().flatten()  # the batch's one host sync: the size of the attacked sub-batch
        if sel.numel():
            s = sel.to(self.device)
            xs, ys = x[sel], y[sel]
            x_adv = self.attack(model, xs, ys, eps=self.eps[i[s]].to(x.device))
            # One image alone in train mode fails where a BatchNorm sees a 1x1 map (a ResNet or MobileNetV2 at
            # 32 px: "Expected more than 1 value per channel"); it goes beside its clean image, whose logits
            # are dropped. Larger sub-batches are forwarded alone, as always.
            logits_adv = model(x_adv) if sel.numel() > 1 else model(torch.cat([x_adv, xs]))[:1]
            ce_adv = per_sample_ce(logits_adv, ys)
            adv_term = ce_adv.mean()
            adv_loss[s] = ce_adv.detach().float().to(self.device)
            # In the attack's own norm: the radius it moves towards bounds that norm (L2 by default, Linf too).
            adv_dist[s] = distance(self.config.attack.norm, x_adv, xs).detach().float().to(self.device)
            # As in DPAAT: a non-finite loss or distance (a NaN image, an overflow) must not reach the radius,
            # which would stay NaN for the rest of the run; such a sample keeps its radius and is counted.
            finite = torch.isfinite(adv_loss[s]) & torch.isfinite(adv_dist[s])
            ok[s], bad[s] = finite, ~finite
        # Every image of the batch, attacked or not, records its last visit: one misclassified at its latest visit
        # (of the batch, or of the epoch: the balanced sampler draws an image several times) keeps its radius, as
        # method.md says, instead of an earlier visit's result.
        last = self.last_visit(i)
        self.seen[i] = ok[last]
        self.nonfinite[i] = bad[last]
        self.adv_loss[i] = adv_loss[last]
        self.adv_dist[i] = adv_dist[last]
        loss = a * ce.mean() + (1 - a) * adv_term
        return loss, {"acc": correct.float().mean(), "attacked": correct.sum(), "loss": loss.detach()}

    def end_epoch(self):
        s = self.seen
        grow = s & (self.adv_loss <= self.threshold)
        shrink = s & ~grow
        self.eps[grow] += self.delta
        self.eps[shrink] = (self.eps[shrink] + self.adv_dist[shrink]) / 2
        self.eps.clamp_(0.0, self.eps_max)
        # Always logged (0 included), so a history tells whether its run was trained with this count.
        logs = {"grown": int(grow.sum()), "shrunk": int(shrink.sum()), "nonfinite_adv": int(self.nonfinite.sum()),
                **self.radius_log()}
        self.seen.zero_()
        self.nonfinite.zero_()
        return logs

    def state_dict(self):
        return {"eps": self.eps.cpu().clone(), "seen": self.seen.cpu().clone(),
                "adv_loss": self.adv_loss.cpu().clone(), "adv_dist": self.adv_dist.cpu().clone(),
                "threshold": self.threshold}

    def load_state_dict(self, state):
        for k in ("eps", "seen", "adv_loss", "adv_dist"):
            setattr(self, k, self._table(state[k]))
        self.threshold = state["threshold"]


class DPAAT(RadiusTable):
    """DPAAT (Li et al. 2024), eq. 11-15 as reconstructed in method.md.

    Per batch: l = CE(x), x' = PGD within eps_i, l' = CE(x'); dL = l' - l
    (detached), mu its batch mean; eps_i <- clip(eps_i - eta (dL_i - mu),
    eps_min, eps_max): relatively fragile samples (dL_i > mu) shrink, stable
    ones grow. Loss: alpha mean(l) + (1 - alpha) mean(l') + lambda L_sync.
    ``adapt=False`` keeps eps0 (ablation D-B); ``lam = 0`` is D-A.
    """

    def __init__(self, config, n_train, generator=None, adapt: bool = True, device=None):
        super().__init__(config, n_train, generator, init=config.eps0, device=device)
        self.adapt = adapt
        self.eta = config.eps0 if config.eta is None else config.eta
        # The epoch's running statistics of dL (sum of the finite ones, count, non-finite count), on the device
        # and updated in place: no sync per batch, and a CUDA graph's replays add to the same tensors.
        self._dl_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._dl_n = torch.zeros((), dtype=torch.int64, device=self.device)
        self._dl_bad = torch.zeros((), dtype=torch.int64, device=self.device)
        self.prev_epoch_mu: float | None = None
        # The same as a device tensor (float32, as dL) and whether there is one yet, read inside the step, so
        # that a captured step sees each epoch's new value (mu="epoch").
        self._prev_mu = torch.zeros((), device=self.device)
        self._has_prev_mu = torch.zeros((), dtype=torch.bool, device=self.device)

    def step_length(self, dl: torch.Tensor, mu: torch.Tensor | float) -> torch.Tensor:
        """Signed change of each radius: -eta (dL - mu), or the normalised length option."""
        dev = dl - mu
        if self.config.length == "normalized":
            scale = dev.abs().max().clamp_min(1e-12)
            return -self.config.gamma * self.config.eps0 * dev / scale
        return -self.eta * dev

    def batch_loss(self, model, x, y, idx):
        c = self.config
        i = idx.to(self.device)
        x_adv = self.attack(model, x, y, eps=self.eps[i].to(x.device))
        logits, logits_adv = forward_pair(model, x, x_adv)
        l, l_adv = per_sample_ce(logits, y), per_sample_ce(logits_adv, y)
        l_sync = sync_loss(logits, logits_adv).mean()
        loss = c.alpha * l.mean() + (1 - c.alpha) * l_adv.mean() + c.lam * l_sync
        dl = (l_adv - l).detach().float().to(self.device)
        # A non-finite dL (a NaN image, an overflowing loss) must not reach mu, which would turn every
        # radius of the batch NaN for good: only finite entries count and are updated. All on the device,
        # without a sync; where every entry is finite, the values below are exactly dl's own.
        finite = torch.isfinite(dl)
        dl_finite = torch.where(finite, dl, torch.zeros_like(dl))
        self._dl_sum.add_(dl_finite.sum().double())
        self._dl_n.add_(dl.numel())
        self._dl_bad.add_((~finite).sum())
        if self.adapt:
            n_finite = finite.sum()
            mu = torch.where(n_finite == dl.numel(), dl_finite.mean(),
                             dl_finite.sum() / n_finite.clamp_min(1))  # mean over the finite entries
            if c.mu == "epoch":  # the previous epoch's mean, once there is one
                mu = torch.where(self._has_prev_mu, self._prev_mu, mu)
            # A non-finite entry steps by 0 (dL := mu) and keeps its radius.
            step = self.step_length(torch.where(finite, dl, mu), mu)
            old = self.eps[i]
            new = torch.where(finite, (old + step).clamp(c.eps_min, self.eps_max), old)
            self.eps[i] = new[self.last_visit(i)]  # an image drawn twice in the batch: its last visit's radius
        return loss, {"loss": loss.detach(), "sync": l_sync.detach(), "dL_mean": dl.mean(),
                      "acc": accuracy(logits, y), "adv_acc": accuracy(logits_adv, y)}

    def end_epoch(self):
        total, bad = int(self._dl_n), int(self._dl_bad)
        n = total - bad  # the finite dL of the epoch
        if n:
            self._set_prev_mu(float(self._dl_sum) / n)
        logs = {"nonfinite_dL": bad} if bad else {}
        for t in (self._dl_sum, self._dl_n, self._dl_bad):
            t.zero_()
        return {"epoch_mu": self.prev_epoch_mu, **logs, **self.radius_log()}

    def _set_prev_mu(self, mu: float | None) -> None:
        self.prev_epoch_mu = mu
        self._prev_mu.fill_(0.0 if mu is None else mu)
        self._has_prev_mu.fill_(mu is not None)

    def state_dict(self):
        return {"eps": self.eps.cpu().clone(), "prev_epoch_mu": self.prev_epoch_mu,
                "epoch_dl_sum": float(self._dl_sum), "epoch_dl_n": int(self._dl_n)}

    def load_state_dict(self, state):
        self.eps = self._table(state["eps"])
        self._set_prev_mu(state["prev_epoch_mu"])
        # The running sums of the current epoch (zero at an epoch's end, where checkpoints are taken).
        self._dl_sum.fill_(state.get("epoch_dl_sum", 0.0))
        self._dl_n.fill_(state.get("epoch_dl_n", 0))
        self._dl_bad.zero_()


CLASSES: dict[str, type[Method]] = {"std": STD, "at": AT, "sat": SAT, "amat": AMAT, "dpaat": DPAAT, "d-a": DPAAT,
                                    "d-b": DPAAT}
"""The class :func:`build_method` makes for each name (for what a class says, e.g. ``graph_safe``)."""


def build_method(config: MethodConfig, n_train: int, *, generator: torch.Generator | None = None,
                 threshold: float | None = None, device=None, check_values: bool = True) -> Method:
    """The strategy object for ``config.name``; AMAT needs its STD model's ``threshold``. ``device``: where
    AMAT's and DPAAT's per-sample tables live (default: the generator's device, else the CPU).
    ``check_values=False`` leaves out the checks of :meth:`Method.loss` that read the batch's values (a
    device sync each batch), as the training loop does."""
    name = config.name
    if name == "std":
        method = STD(config, n_train, generator)
    elif name == "at":
        method = AT(config, n_train, generator)
    elif name == "sat":
        method = SAT(config, n_train, generator)
    elif name == "amat":
        method = AMAT(config, n_train, generator, threshold=threshold, device=device)
    elif name == "dpaat":
        method = DPAAT(config, n_train, generator, device=device)
    elif name == "d-a":  # dynamic adaptation only
        method = DPAAT(replace(config, lam=0.0), n_train, generator, device=device)
    elif name == "d-b":  # synchronisation loss only, fixed eps0
        method = DPAAT(config, n_train, generator, adapt=False, device=device)
    else:
        raise ValueError(f"unknown method {name!r}; choose one of {METHODS}")
    method.check_values = check_values
    return method
