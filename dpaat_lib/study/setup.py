"""Which profiles, seeds, CNNs and swept values chapter 12 uses, and the note that says so."""
from __future__ import annotations

from typing import Sequence

from .. import profiles, report
from ..evaluation import CLEAN
from ..models import list_models


STUDY_PROFILES = {"quick": ("quick", "quick-7")}
"""Book profile -> (the 3-class study profile, the 7-class profile). Any other book profile (cpu-real,
paper: six CNNs at 224 px cannot afford three seeds and the sweeps) uses cpu-real and cpu-real-7."""

STUDY_SEEDS = (0, 1, 2)
"""The training seeds of the method comparison (section a)."""
SWEEP_SEEDS: dict[str, dict[str, tuple[int, ...]]] = {"cpu-real": {"smallcnn": (0, 1, 2)}}
"""The seeds of each sweep value, per study profile and CNN (:func:`sweep_seeds_for`); seed 0 alone where
none is named (MobileNetV2 and ResNet34 on cpu-real: what the CPU affords). The default DPAAT's spread over
:data:`STUDY_SEEDS` is the yardstick a sweep point is read against."""
SWEEP_MODELS = {"cpu-real": ("smallcnn", "mobilenet_v2", "resnet34"), "quick": ("smallcnn",)}
"""The CNNs each study profile sweeps DPAAT's parameters on. On cpu-real: the small CNN of the main grid,
and MobileNetV2 and ResNet34, the two CNNs method.md names for the sweep, trained from scratch at the
profile's 32 px (ResNet34: about 22 minutes a DPAAT run on one CPU core). For a model outside the main
grid, AT and the default DPAAT are trained on :data:`STUDY_SEEDS` too, as the sweep's yardsticks."""
STUDY_OVERRIDES: dict[str, dict] = {"quick": {"image_size": 16}}
"""Profile overrides of the chapter's own runs per book profile. The quick build trains the study's 53
runs (3 seeds x 5 methods for each of parts (a), (d) and (e), 3 sweep points, 5 on seven classes) at 16 px
instead of 32, which keeps the chapter to about five minutes (311 s in `make book` on a fresh clone, 2 CPU
cores); on cpu-real the runs are the main grid's, unchanged."""

SWEEP_PARAMS = ("eta", "lam", "mu")
SWEEP_NAMES = {"eta": "adaptive length eta", "lam": "synchronisation weight lambda", "mu": "criterion mu"}
DEFAULT_SWEEPS = {
    # None is eta = eps0, the default: its point is the main grid's DPAAT run.
    # method.md names {0.1, 0.5, 1, 2} for lambda; eta from a tenth of the default to twice it. One seed
    # per point (what the CPU afforded), read against the default's three seeds.
    "cpu-real": {"eta": (0.05, 0.25, None, 1.0), "lam": (0.1, 0.5, 1.0, 2.0), "mu": ("batch", "epoch")},
    "quick": {"eta": (0.05, None), "lam": (0.1, 1.0), "mu": ("batch", "epoch")},
}
COMPARED = ("AT", "SAT", "AMAT")
"""The methods DPAAT is tested against (STD is not an adversarial defence)."""
MAIN_COLUMNS = ("GAcc", "FGSM", "20-IFGSM", "20-PGD", "mAP")
"""The columns of the three-seed table: clean accuracy, three of the paper's attacks, mean average precision."""
TEST_ATTACKS = (CLEAN, "FGSM", "20-IFGSM", "20-PGD")
"""The attacks under which DPAAT is compared with each method (accuracy on the same test images)."""


def study_profiles(profile: str) -> tuple[str, str]:
    """(3-class study profile, 7-class profile) for the book's ``profile``."""
    return STUDY_PROFILES.get(profile, ("cpu-real", "cpu-real-7"))


def study_overrides(profile: str, **given) -> dict:
    """The profile overrides of the chapter's runs for the book's ``profile``: :data:`STUDY_OVERRIDES`,
    then every ``given`` value that is not None (the notebook's parameters)."""
    out = dict(STUDY_OVERRIDES.get(profile, {}))
    out.update({k: v for k, v in given.items() if v is not None})
    return out


def _field_text(field: str, value) -> str:
    """A profile field's value as the note prints it: a radius rounded (:func:`dpaat_lib.profiles.radius_text`),
    an Linf radius in 255ths."""
    if field == "linf_eps":
        return profiles.linf_text(value)
    if field in ("eps0", "train_step_size"):
        return profiles.radius_text(value)
    return str(value)


def study_note(book_profile: str, study_profile: profiles.Profile, seven_profile: profiles.Profile,
               overrides: dict, sweep_seeds: Sequence[int] | None, sweep_cnns: Sequence[str] = ()) -> str:
    """Markdown: which profiles this chapter's runs use and why, and how they differ from the book's."""
    parts = []
    if study_profile.name != book_profile:
        parts.append(f"The book's profile is `{book_profile}`; three seeds, the sweeps and the seven-class task "
                     f"are affordable only on profile `{study_profile.name}` ({study_profile.image_size} px, "
                     f"{', '.join(study_profile.models)}), so this chapter uses it.")
    base = profiles.get_profile(study_profile.name)
    given_profile = profiles.profile_for(study_profile.name, **overrides)  # "8/255" read as profile_for reads it
    changed = {k: f"{k} {_field_text(k, getattr(base, k))} -> {_field_text(k, getattr(given_profile, k))}"
               for k in overrides if getattr(base, k) != getattr(given_profile, k)}
    # The chapter's own changes (STUDY_OVERRIDES: the quick build's size) and those given as parameters
    own = [text for k, text in changed.items() if STUDY_OVERRIDES.get(book_profile, {}).get(k) == overrides[k]]
    given = [text for text in changed.values() if text not in own]
    if changed:
        parts.append(f"This chapter's runs change the profile's {', '.join(own or given)} (for "
                     f"`{study_profile.name}` and `{seven_profile.name}`), so they are not the runs of the other "
                     "chapters: " + ("the quick build must stay within minutes on one CPU core." if own else
                                     "given as parameters."))
    if own and given:
        parts.append(f"The parameters given change {', '.join(given)} too.")
    seeds = lambda ss: f"{len(ss)} training seed(s) ({', '.join(map(str, ss))})"  # noqa: E731
    if sweep_seeds or not sweep_cnns:
        on = f" on {', '.join(sweep_cnns)}" if sweep_cnns else ""
        sweep = f"each sweep value{on} is trained on {seeds(tuple(sweep_seeds or (0,)))}"
    else:
        per = {m: sweep_seeds_for(study_profile.name, m) for m in sweep_cnns}
        sweep = "each sweep value is trained on " + report.and_list([f"{seeds(ss)} on {m}" for m, ss in per.items()])
    parts.append(f"Seeds: the method comparison uses {seeds(study_profile.seeds)}; {sweep}, and read against the "
                 f"default DPAAT's spread over {seeds(study_profile.seeds)}; the seven-class task uses "
                 f"{seeds(seven_profile.seeds)}.")
    return " ".join(parts)


def sweep_models(study_profile: str, given=None) -> tuple[str, ...]:
    """The CNNs ``study_profile``'s DPAAT parameters are swept on: ``given`` (the page's parameter: a list, one
    name, or its text, "[smallcnn, resnet34]") or :data:`SWEEP_MODELS`. An unknown name is refused with the known
    ones, before anything trains."""
    if not given:
        return SWEEP_MODELS.get(study_profile, tuple(profiles.get_profile(study_profile).models))
    chosen = profiles.list_parameter(given)
    unknown = [m for m in chosen if m not in list_models()]
    if unknown:
        raise ValueError(f"sweep_models: unknown CNN(s) {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(list_models())}")
    return tuple(dict.fromkeys(chosen))


def default_sweeps(study_profile: str, **given) -> dict[str, tuple]:
    """The swept values per parameter for ``study_profile`` (the same on every CNN it sweeps);
    a ``given`` sequence (not None) replaces that parameter's values. The profile's own value is always
    included (it is the reference point)."""
    out = dict(DEFAULT_SWEEPS.get(study_profile, DEFAULT_SWEEPS["cpu-real"]))
    prof = profiles.get_profile(study_profile)
    for param, values in given.items():
        if param not in SWEEP_PARAMS:
            raise ValueError(f"cannot sweep {param!r}; choose from {SWEEP_PARAMS}")
        if values is None:
            continue
        values = tuple(_sweep_value(param, v) for v in profiles.list_parameter(values))  # "[0.25, 1]" as text too
        default = getattr(prof, param)
        out[param] = values if default in values else (default, *values)
    return out


def _sweep_value(param: str, value):
    """One swept value as the parameter takes it: eta and lam numbers (eta's "null": eps0 per nat), mu a name."""
    if param == "mu":
        return str(value)
    if param == "eta" and (value is None or str(value).lower() in ("null", "none")):
        return None
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        raise ValueError(f"{param}_values must be numbers, e.g. [0.25, 1.0], got {value!r}") from None


def value_label(param: str, value, eps0: float = 0.5) -> str:
    """How a sweep value is written in tables: eta None is eps0."""
    if param == "eta" and value is None:
        return f"eps0 = {eps0:g}"
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def sweep_seeds_for(study_profile: str, model: str) -> tuple[int, ...]:
    """The training seeds of each sweep value of ``model`` on ``study_profile`` (:data:`SWEEP_SEEDS`)."""
    return SWEEP_SEEDS.get(study_profile, {}).get(model, (0,))
