"""One training loop for every method (method.md section 6), seeded and resumable.

The loop owns the schedule (Adam, batch size, early stopping on the
validation set, the best checkpoint); the method object owns the loss and its
per-sample state. The whole training set sits on the device as uint8 and is
flipped there, so an epoch never decodes a JPEG. After every epoch the state
(model, optimiser, method, random generators, history) is saved atomically to
``ckpt/last.pt``; a call on a run folder that has it continues from there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import store
from .attacks import restore_training_modes, training_modes
from .config import RunConfig
from .data import check_split_tensors
from .methods import CLASSES, build_method
from .models import build_model, check_input_size, head

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""torch.compile's modes, for ``train_run(compile_mode=...)`` and the command lines."""
GRAPH_MODE = "cuda-graph"
"""The library's own CUDA graph of the whole training step (:class:`CapturedStep`), no compiler."""
SPEED_MODES = COMPILE_MODES + (GRAPH_MODE,)
"""What ``train_run(compile_mode=...)`` and ``--compile`` accept."""
WITHOUT_CUDA_GRAPHS = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}
"""torch.compile's modes that replay CUDA graphs, and the same mode without them."""


class _Pair(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, a: torch.Tensor, b: torch.Tensor):
        return self.model(a), self.model(b)


class CompiledNet(nn.Module):
    """``model`` through ``torch.compile(mode=mode)`` for training; shares the model's parameters.

    Calling it runs the compiled model. :meth:`forward_pair` runs two batches (SAT's and DPAAT's
    clean and adversarial ones) through one compiled graph: CUDA graphs (mode "reduce-overhead")
    then see one forward and one backward per step. Two separate compiled forwards before one
    backward leave a backward pending at the second, which CUDA-graph trees run off their fast path
    (pytorch/pytorch#176846). Each batch still passes BatchNorm on its own, as in eager mode.
    Train/eval mode is the wrapped model's. Checkpoints are taken from ``model``, never from this.

    ``batch_size``: the one batch size compiled, with static shapes; a batch of another size (an
    epoch's last, partial batch) runs the eager model. Left to torch, that one batch an epoch
    recompiled every graph with a dynamic batch size, which doubled the compile time and left the
    rest of the run on the dynamic graphs (benchmarks/compile_time.py). ``None``: the batch size
    varies (AMAT's attacked sub-batch): the graphs are compiled with a dynamic batch size from the
    first call, not first for one size and then again for all.
    """

    compiled = True  # the attacks freeze the weights of a compiled model (dpaat_lib.attacks.is_compiled)

    def __init__(self, model: nn.Module, mode: str, batch_size: int | None = None):
        super().__init__()
        self.model = model
        self.batch_size = batch_size
        dynamic = None if batch_size is None else False  # None: dynamic where _compiles marks it
        # A tuple, so the compiled wrappers are not registered as submodules (their parameters are model's).
        self._compiled = (torch.compile(model, mode=mode, dynamic=dynamic),
                          torch.compile(_Pair(model), mode=mode, dynamic=dynamic))

    def _compiles(self, *batches: torch.Tensor) -> bool:
        if self.batch_size is None:
            for x in batches:  # from the first call on: one compile for every size
                torch._dynamo.maybe_mark_dynamic(x, 0)
            return True
        return batches[0].shape[0] == self.batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._compiled[0](x) if self._compiles(x) else self.model(x)

    def forward_pair(self, a: torch.Tensor, b: torch.Tensor):
        return self._compiled[1](a, b) if self._compiles(a, b) else (self.model(a), self.model(b))


def compiled_for(model: nn.Module, mode: str, method, batch_size: int) -> CompiledNet:
    """``model`` compiled to train ``method`` at ``batch_size`` (train_run, and the benchmarks that time
    it): for the full batch only, unless the method's batches vary in size (AMAT's sub-batch). A method
    that CUDA graphs cannot capture (AMAT) is compiled in the same mode without them (:func:`effective_mode`)."""
    return CompiledNet(model, _mode_for(mode, method.graph_safe),
                       batch_size=None if method.varying_batch else batch_size)


class CapturedStep:
    """Every full-batch training step of a run replayed from one CUDA graph (mode ``"cuda-graph"``).

    At batch 32 an eager step of PGD-7 training is eight forward and backward passes of 32 images, each a
    few hundred kernels too small to keep a GPU busy: launching them sets the pace. The graph launches
    the whole step (the batch's gather and flips, the method's attack and loss, backward, Adam's update,
    the sums of the batch logs) at once. Unlike ``torch.compile`` there is nothing to compile: capturing
    costs about one step.

    A replay runs the captured kernels and none of the Python, on the same memory. So the step keeps
    every tensor it reads or updates where it is: the training set, the model's parameters and buffers,
    Adam's state (``capturable=True``), the method's tables (``Method.graph_safe``) and the log sums are
    updated in place, and the batch's indices are copied into :attr:`idx` before each replay. The
    method's and the flips' generators are registered with the graph, so every replay draws new random
    numbers from them, as the eager steps do. bf16 autocast must run without its weight-cast cache
    (``cache_enabled=False``), which a replay could not refill.

    The first :attr:`WARMUP` full batches run eagerly on a side stream (CUDA's lazy initialisation and
    autograd's streams must settle before a capture); the next is captured, then replayed, and so is every
    later one. A batch of another size (an epoch's last, partial one) runs eagerly. One object per
    training phase: freezing or unfreezing parameters changes the step, so the loop starts a new one.
    """

    WARMUP = 3

    def __init__(self, batch_size: int, device, generators=()):
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.generators = tuple(generators)
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self.sums: dict[str, torch.Tensor] = {}  # the batch logs' sums, read and zeroed by train_epoch
        self.graph = None
        self.warmed = 0

    def __call__(self, step, idx: torch.Tensor) -> None:
        """Run ``step(self.idx)`` for the batch ``idx``: eagerly while warming up, else by the graph."""
        if idx.shape[0] != self.batch_size:
            step(idx)
            return
        self.idx.copy_(idx)
        if self.graph is None:
            if self.warmed < self.WARMUP:
                self._warm_up(step)
                self.warmed += 1
                return
            self.graph = self._capture(step)
        self._replay()

    def _warm_up(self, step) -> None:
        side, main = torch.cuda.Stream(self.device), torch.cuda.current_stream(self.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            step(self.idx)
        main.wait_stream(side)

    def _capture(self, step):
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph):
            step(self.idx)
        return graph

    def _replay(self) -> None:
        self.graph.replay()


def captured_step_for(mode: str | None, method, batch_size: int, device, generators=()) -> CapturedStep | None:
    """A :class:`CapturedStep` where ``mode`` is ``"cuda-graph"`` and the method can be captured, else None
    (AMAT, which reads its sub-batch's size on the host every batch, then trains eagerly). The mode needs
    a CUDA device: anywhere else it raises ValueError."""
    if mode != GRAPH_MODE:
        return None
    if torch.device(device).type != "cuda":
        raise ValueError(f"compile mode {GRAPH_MODE!r} captures CUDA graphs and needs a CUDA device, got "
                         f"{device!r}: train eagerly (no mode) or through torch.compile there")
    if method.graph_safe and method.check_values:
        raise ValueError(f"{type(method).__name__} checks each batch's values on the host, which a CUDA graph "
                         "cannot capture: build it with build_method(..., check_values=False), as train_run does")
    return CapturedStep(batch_size, device, generators) if method.graph_safe else None


def effective_mode(mode: str | None, method_name: str) -> str | None:
    """The speed mode a run of ``method_name`` actually trains in under ``mode``. AMAT is not captured by
    the library's graph, so it trains eagerly (None) under ``"cuda-graph"``; under torch.compile's CUDA
    graphs it trains compiled without them (:data:`WITHOUT_CUDA_GRAPHS`): its clean forward runs before
    the attack picks the sub-batch, so two compiled forwards of different sizes precede one backward, and
    the second graph's replay overwrote the first's saved tensors (an H200 with torch 2.11: "accessing
    tensor output of CUDAGraphs that has been overwritten by a subsequent run")."""
    return _mode_for(mode, CLASSES[method_name].graph_safe)


def _mode_for(mode: str | None, graph_safe: bool) -> str | None:
    """``mode`` for a method that CUDA graphs can capture (``graph_safe``), else the mode without them."""
    if graph_safe:
        return mode
    return None if mode == GRAPH_MODE else WITHOUT_CUDA_GRAPHS.get(mode, mode)


@dataclasses.dataclass
class SpeedPath:
    """What a speed mode changes in the training loop (:func:`speed_path`): the module the method runs
    (``net``), the optimiser, the autocast context and the captured step."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    autocast: object
    captured: CapturedStep | None


def speed_path(model: nn.Module, method, mode: str | None, *, batch_size: int, device, lr: float, bf16: bool,
               generators=()) -> SpeedPath:
    """The loop's pieces for ``mode`` (None: eager; a torch.compile mode; ``"cuda-graph"``), as
    :func:`train_run` and the benchmarks build them: torch.compile's modes wrap the model (sharing its
    parameters); the library's graph captures the step, with Adam's state updated on the device
    (``capturable``) and autocast without its weight-cast cache. ``bf16``: autocast to bfloat16."""
    device = torch.device(device)
    if mode is not None and mode not in SPEED_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; use one of {SPEED_MODES} or None (eager)")
    captured = captured_step_for(mode, method, batch_size, device, generators)
    graphed = captured is not None
    net = compiled_for(model, mode, method, batch_size) if mode in COMPILE_MODES else model
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, **({"capturable": True} if graphed else {}))
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=not graphed) if bf16
                else contextlib.nullcontext())
    return SpeedPath(net, optimizer, autocast, captured)


TRAINING_PATH_MODULES = ("attacks", "methods", "models", "training")


def training_code_digest() -> str:
    """12 hex digits of the SHA-256 of the training path's code (:data:`TRAINING_PATH_MODULES`), comments,
    docstrings and blank lines left out (:func:`code_text`): stored with a benchmark, it tells whether
    the code it timed is the code of today, and an edit to the prose alone does not make it "earlier"."""
    import hashlib
    from pathlib import Path

    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in TRAINING_PATH_MODULES:
        h.update(code_text((here / f"{name}.py").read_text(encoding="utf-8")).encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def code_text(source: str) -> str:
    """``source`` without its comments, string statements (docstrings) and blank lines, trailing blanks
    stripped: what a Python file runs. Built from line positions (``ast`` and ``tokenize``), not from
    ``ast.dump``, whose text changes between Python versions: a GPU machine's Python and this one's must
    give one digest for one file."""
    import ast
    import io
    import re
    import tokenize

    lines = re.split(r"\r\n|\r|\n", source)  # ast's line numbering (str.splitlines also splits at \f)
    comment_at = {tok.start[0] - 1: tok.start[1] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                  if tok.type == tokenize.COMMENT}
    dropped: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            first, last = node.lineno - 1, node.end_lineno - 1
            before = lines[first].encode()[:node.col_offset]  # ast's columns count UTF-8 bytes
            after = lines[last][:comment_at.get(last, len(lines[last]))].encode()[node.end_col_offset:]
            # Only a string that has its lines to itself (a docstring): `x = 1; "s"` keeps its line.
            if not before.strip() and not after.strip(b" ;"):
                dropped.update(range(first, last + 1))
    kept = (line[:comment_at.get(i, len(line))].rstrip() for i, line in enumerate(lines) if i not in dropped)
    return "\n".join(line for line in kept if line)


def require_uint8(x) -> None:
    """Raise TypeError unless ``x`` is a uint8 tensor (images 0-255).

    The training and evaluation tensors (:class:`dpaat_lib.data.SplitTensors`) hold uint8 images, and
    a float tensor where they are expected is a mistake (scaling it by 1/255 again would silently
    darken the images).
    """
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"expected uint8 images (0-255), got {got}: the training and evaluation tensors hold "
                        "uint8 (dpaat_lib.data.SplitTensors.x). Convert float images in [0, 1] with "
                        "(x * 255).round().to(torch.uint8)")


def to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images (0-255) as a new float32 tensor in [0, 1]; the input is never modified
    (:func:`require_uint8` refuses any other dtype)."""
    require_uint8(x_uint8)
    return x_uint8.float().div_(255)  # .float() of a uint8 tensor is a new tensor: div_ touches only that


def random_flips(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Horizontal and vertical flips, each with probability 1/2 per image (dermoscopy has no 'up')."""
    n = x.shape[0]
    h = torch.rand(n, generator=generator, device=generator.device) < 0.5
    v = torch.rand(n, generator=generator, device=generator.device) < 0.5
    x = torch.where(h.to(x.device).view(n, 1, 1, 1), x.flip(3), x)
    return torch.where(v.to(x.device).view(n, 1, 1, 1), x.flip(2), x)


def epoch_order(y: torch.Tensor, generator: torch.Generator, sampler: str = "shuffle",
                draws: int | None = None) -> torch.Tensor:
    """The training-set indices of one epoch, on the CPU.

    ``"shuffle"``: a random permutation (every image once; the paper's).
    ``"balanced"``: ``len(y)`` draws with replacement, image i with probability proportional to
    1 / (images of its class), so each class is drawn equally often in expectation (about
    ``len(y) / K`` times per epoch): minority images are seen several times, majority images not
    all in every epoch. The epoch keeps its length, and the indices stay indices into the training
    set, so per-sample state (DPAAT's and AMAT's radii) works unchanged. ``draws`` sets the
    balanced epoch's length instead (``TrainConfig.epoch_draws``).
    """
    n = y.shape[0]
    if sampler == "shuffle":
        return torch.randperm(n, generator=generator)
    if sampler == "balanced":
        y = y.cpu()
        counts = torch.bincount(y).double()
        weights = 1.0 / counts[y]
        return torch.multinomial(weights, draws or n, replacement=True, generator=generator)
    raise ValueError(f"unknown sampler {sampler!r}; use 'shuffle' or 'balanced'")


def check_device(device) -> torch.device:
    """``device`` as a torch.device, or a ValueError that names the problem and the fix: a name torch does not
    know ("gpu"), a CUDA device on a machine without one or past its count, a CPU with an index."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}: use cpu, cuda or cuda:N ({err})") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: no CUDA GPU is visible to torch {torch.__version__} here; use cpu")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif d.type == "cpu" and d.index not in (None, 0):
        raise ValueError(f"device {device!r}: the CPU has no index; use cpu")
    elif d.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available here; use cpu")
    return d


@torch.no_grad()
def predict_logits(model, x_uint8: torch.Tensor, *, batch_size: int = 256, device="cpu",
                   channels_last: bool = False) -> torch.Tensor:
    """Eval-mode logits of uint8 images (N, 3, H, W), in batches; every submodule's mode is restored.
    A float tensor raises TypeError (:func:`to_float`)."""
    require_uint8(x_uint8)
    was = training_modes(model)
    model.eval()
    out = []
    try:
        for i in range(0, x_uint8.shape[0], batch_size):
            xb = to_float(x_uint8[i:i + batch_size].to(device))
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            out.append(model(xb).float().cpu())
    finally:
        restore_training_modes(was)
    return torch.cat(out) if out else torch.empty(0)


def validation_stats(model, x, y, *, device, channels_last=False) -> dict:
    logits = predict_logits(model, x, device=device, channels_last=channels_last)
    ce = F.cross_entropy(logits, y.cpu(), reduction="none")
    return {"val_acc": (logits.argmax(1) == y.cpu()).float().mean().item(), "val_loss": ce.mean().item(),
            "val_ce_std": ce.std().item()}


def _score(stats: dict, select_on: str) -> float:
    """Higher is better."""
    return stats["val_acc"] if select_on == "val_acc" else -stats["val_loss"]


def train_epoch(model, method, optimizer, x_train: torch.Tensor, y_train: torch.Tensor, order: torch.Tensor, *,
                batch_size: int, flips: torch.Generator | None = None, channels_last: bool = False,
                autocast=None, captured: CapturedStep | None = None) -> dict:
    """One pass over ``x_train`` (uint8, on the device) in the given ``order``; returns mean batch logs.

    This is the library's training path (also timed by benchmarks/): data
    already on the device, augmentation there, optional bf16 autocast and
    channels_last memory format, and with ``captured`` the full batches
    replayed from one CUDA graph (:class:`CapturedStep`).
    """
    model.train()
    autocast = autocast or contextlib.nullcontext()
    # The batch logs are summed where they are, in float64, in place, and read once at the end: a read per
    # batch would make the host wait for the device every batch (and a graph's replays add to the same sums).
    sums = captured.sums if captured is not None else {}

    def step(idx: torch.Tensor) -> None:
        xb = to_float(x_train[idx])
        if flips is not None:
            xb = random_flips(xb, flips)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast:
            loss, logs = method.loss(model, xb, y_train[idx], idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for k, v in logs.items():
            if not isinstance(v, torch.Tensor):
                if captured is not None:  # a replay would add the number of the capture, every batch
                    raise TypeError(f"{type(method).__name__}.loss logged {k!r} as a {type(v).__name__}: a "
                                    "captured step needs every batch log as a tensor")
                sums[k] = sums.get(k, 0.0) + float(v)
            elif k in sums:
                sums[k].add_(v.detach())
            else:
                sums[k] = v.detach().double().clone()

    # A last batch of one image joins the batch before it: one image alone in train mode fails where a
    # BatchNorm sees a 1x1 map (a ResNet or MobileNetV2 at 32 px). Other last batches stay as they are.
    n = order.shape[0]
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    batches = 0
    for i, end in zip(starts, starts[1:] + [n]):
        idx = order[i:end]
        if captured is not None:
            captured(step, idx)
        else:
            step(idx)
        batches += 1
    means = {k: float(v) / max(batches, 1) for k, v in sums.items()}
    for k, v in sums.items():  # zeroed in place: a graph's replays of the next epoch add to these tensors
        if isinstance(v, torch.Tensor):
            v.zero_()
        else:
            sums[k] = 0.0
    return means


def train_run(config: RunConfig, data: dict, run: store.RunDir, *, device="cpu",
              threshold: float | None = None, weights_path=None, progress: bool = True,
              time_budget_s: float | None = None, compile_mode: str | None = None) -> dict:
    """Train ``config`` on ``data`` ({"train", "val"} SplitTensors) into ``run``; resumable.

    Returns the history dict (also in ``history.json``) with ``finished`` True
    once early stopping or the epoch limit ended the run; with a
    ``time_budget_s`` (seconds from the call) it may return unfinished, and the next call continues (no
    epoch is started that, as long as this call's shortest, would end past the budget).

    ``compile_mode`` (None: eager): train through :class:`CompiledNet` (``torch.compile``), e.g.
    ``"reduce-overhead"`` for CUDA graphs, which at batch 32 spare a GPU the launch of every kernel;
    or ``"cuda-graph"``: the library's own graph of the whole step (:class:`CapturedStep`), nothing
    compiled, on a CUDA device (AMAT trains eagerly there). A speed option, not part of the run's
    identity: the numbers may change only as float rounding does (tests/test_training.py);
    validation, checkpoints and evaluation use the eager model. ``history["compile_mode"]`` records
    the mode that trained the run's last part, where one did.
    """
    started = time.perf_counter()  # the budget counts the setup too (building, loading the checkpoint)
    tc, device = config.train, torch.device(device)
    if run.trained:
        return store.read_json(run / "history.json")
    check_split_tensors(data, ("train", "val"))
    check_input_size(config.model, config.data.image_size)
    torch.manual_seed(tc.seed)
    model = build_model(config.model, len(config.data.classes), weights_path).to(device)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train, val = data["train"], data["val"]
    x_train, y_train = train.x.to(device), train.y.to(device)
    n = x_train.shape[0]
    shuffle_gen = torch.Generator(device="cpu").manual_seed(tc.seed)
    aug_gen = torch.Generator(device=device).manual_seed(tc.seed + 1)
    attack_gen = torch.Generator(device=device).manual_seed(tc.seed + 2)
    # Valid batches by construction (uint8 / 255, indices of an epoch order): no value check, no sync per batch.
    method = build_method(config.method, n, generator=attack_gen, threshold=threshold, device=device,
                          check_values=False)

    two_phase = weights_path is not None
    total_epochs = tc.epochs + (tc.head_epochs if two_phase else 0)
    generators = (attack_gen, aug_gen)
    path = speed_path(model, method, compile_mode, batch_size=tc.batch_size, device=device, lr=tc.lr, bf16=tc.bf16,
                      generators=generators)
    optimizer, graphed = path.optimizer, path.captured is not None
    state = {"epoch": 0, "best_score": -math.inf, "bad_epochs": 0, "epochs": []}

    last = run.ckpt / "last.pt"
    if last.exists():
        ck = store.load_torch(last, map_location=device)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        method.load_state_dict(ck["method"])
        # A generator's state is a CPU byte tensor whatever the generator's device, but map_location has
        # moved every tensor of the checkpoint to the run's device (found resuming on a GPU).
        for gen, key in ((shuffle_gen, "shuffle_gen"), (aug_gen, "aug_gen"), (attack_gen, "attack_gen")):
            gen.set_state(ck[key].cpu())
        # The global generators draw the models' dropout masks (MobileNetV2, SqueezeNet, Inception-v3): without
        # them a resumed run would repeat its first epochs' masks. Checkpoints from before they were kept: as then.
        if "torch_rng" in ck:
            torch.set_rng_state(ck["torch_rng"].cpu())
        if "cuda_rng" in ck and device.type == "cuda":
            torch.cuda.set_rng_state(ck["cuda_rng"].cpu(), device)
        state = ck["state"]
        if progress:
            tqdm.write(f"{config.run_id}: resuming after epoch {state['epoch']} of {total_epochs} ({last})")

    store.write_json(run / "config.json", config.to_dict())
    captured, captured_phase = path.captured, False
    epoch_seconds = []  # this call's epochs, validation and checkpoints included: how far the budget looks ahead
    bar = tqdm(total=total_epochs, initial=state["epoch"], desc=config.run_id, disable=not progress,
               leave=False)
    finished = False
    # Early stopping is in the condition too: a run stopped by it but killed before its history said so resumes
    # to nothing more, instead of training past its stopping epoch.
    while state["epoch"] < total_epochs and state["bad_epochs"] < tc.patience:
        epoch = state["epoch"]
        head_only = two_phase and epoch < tc.head_epochs
        for p in model.parameters():
            p.requires_grad_(not head_only)
        if head_only:
            for p in head(model, config.model).parameters():
                p.requires_grad_(True)
        if graphed and captured_phase != head_only:  # another set of trained parameters: another step
            captured = captured_step_for(compile_mode, method, tc.batch_size, device, generators)
            captured_phase = head_only
        t0 = time.perf_counter()
        order = epoch_order(train.y, shuffle_gen, tc.sampler, tc.epoch_draws).to(device)
        logs = train_epoch(path.net, method, optimizer, x_train, y_train, order, batch_size=tc.batch_size,
                           flips=aug_gen if tc.flips else None, channels_last=tc.channels_last,
                           autocast=path.autocast, captured=captured)
        seconds = time.perf_counter() - t0  # training only: the cost of the method, not of validation
        record = {"epoch": epoch + 1, "phase": "head" if head_only else "all",
                  **{f"train_{k}": v for k, v in logs.items()}, **method.end_epoch(),
                  **validation_stats(model, val.x, val.y, device=device, channels_last=tc.channels_last),
                  "seconds": seconds}
        state["epochs"].append(record)
        state["epoch"] = epoch + 1
        score = _score(record, tc.select_on)
        if score > state["best_score"]:
            state["best_score"], state["bad_epochs"] = score, 0
            store.save_torch(run.ckpt / "best.pt", model.state_dict())
        elif not head_only:
            state["bad_epochs"] += 1
        stop = state["bad_epochs"] >= tc.patience
        rng = {"torch_rng": torch.get_rng_state(),
               **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})}
        store.save_torch(last, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "method": method.state_dict(), "shuffle_gen": shuffle_gen.get_state(),
                                "aug_gen": aug_gen.get_state(), "attack_gen": attack_gen.get_state(),
                                "state": state, **rng})
        store.write_json(run / "history.json", {"finished": False, "epochs": state["epochs"]})
        bar.update(1)
        bar.set_postfix(loss=f"{record.get('train_loss', float('nan')):.3f}", val_acc=f"{record['val_acc']:.3f}")
        if stop:
            finished = True
            break
        # Stop where the next epoch would end past the budget: a call's workers are killed soon after it, and an
        # epoch cut short is lost (checkpoints are written between epochs). The next epoch is taken to be as long
        # as this call's shortest; in a compiled or captured mode not as its first, which also compiled or
        # captured (a minute for ResNet34 on an H200), so only from the second epoch on.
        now = time.perf_counter()
        epoch_seconds.append(now - t0)
        ahead = epoch_seconds if compile_mode is None else epoch_seconds[1:]
        if time_budget_s is not None and now - started + min(ahead, default=0.0) > time_budget_s:
            break
    bar.close()
    finished = finished or state["epoch"] >= total_epochs or state["bad_epochs"] >= tc.patience
    history = {"finished": finished, "epochs": state["epochs"], "select_on": tc.select_on}
    if finished:
        model.load_state_dict(store.load_torch(run.ckpt / "best.pt", map_location=device))
        best = validation_stats(model, val.x, val.y, device=device, channels_last=tc.channels_last)
        history.update(best_epoch=1 + max(range(len(state["epochs"])),
                                          key=lambda j: _score(state["epochs"][j], tc.select_on)),
                       best=best, train_seconds=sum(e["seconds"] for e in state["epochs"]))
        trained_in = effective_mode(compile_mode, config.method.name)
        if trained_in is not None:
            history["compile_mode"] = trained_in  # how the (last part of the) run was trained
    store.write_json(run / "history.json", history)
    return history


def load_trained(config: RunConfig, run: store.RunDir, device="cpu"):
    """The kept (best) model of a trained run, in eval mode."""
    model = build_model(config.model, len(config.data.classes))
    model.load_state_dict(store.load_torch(run.ckpt / "best.pt"))
    return model.to(device).eval()
