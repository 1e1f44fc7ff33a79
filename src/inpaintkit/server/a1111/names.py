"""AUTOMATIC1111's sampler and schedule-type names, and the scheduler of ours each pair means.

A1111 (v1.9+) names a sampler ("DPM++ 2M") and a schedule type ("Karras"); "Automatic" is the sampler's own default
(Karras for DPM++ 2M, the model's spacing for the others). Older clients send one name with the type appended
("DPM++ 2M Karras"). Only the pairs we can honour are listed by /sdapi/v1/samplers and /schedulers; any other is a
4xx that names the ones we know, never a silent substitute (A1111 itself falls back to DPM++ 2M).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ...errors import InputError


@dataclass(frozen=True)
class Sampler:
    name: str
    aliases: tuple[str, ...]
    schedulers: dict[str, str]  # A1111 schedule type name -> our scheduler name
    default_type: str = "normal"  # what "automatic" means for this sampler
    options: dict = field(default_factory=dict)  # as A1111 lists them


# A1111's schedule types we honour: name, label. "normal" is the model's own timestep spacing (diffusers' default).
SCHEDULE_TYPES = {"automatic": "Automatic", "normal": "Normal", "karras": "Karras"}

SAMPLERS = (
    Sampler(
        "DPM++ 2M", ("k_dpmpp_2m",), {"karras": "dpm++2m-karras", "normal": "dpm++2m"}, "karras",
        {"scheduler": "karras"},
    ),
    Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), {"normal": "euler-a"}, options={"uses_ensd": True}),
    Sampler("Euler", ("k_euler",), {"normal": "euler", "karras": "euler-karras"}),
    Sampler("LMS", ("k_lms",), {"normal": "lms", "karras": "lms-karras"}),
    Sampler("DDIM", ("ddim",), {"normal": "ddim"}),
    Sampler("PLMS", ("plms",), {"normal": "pndm"}),
    Sampler("UniPC", ("unipc",), {"normal": "unipc"}),
)  # fmt: skip
SAMPLERS_BY_NAME = {name.lower(): sampler for sampler in SAMPLERS for name in (sampler.name, *sampler.aliases)}
DEFAULT_SAMPLER = "Euler"  # A1111's API default (its sampler_index)


@dataclass(frozen=True)
class Resolved:
    scheduler: str  # ours
    sampler: str  # A1111's name, for the infotext
    schedule_label: str  # A1111's label ("Automatic", "Karras"), for the infotext


def resolve_sampler(sampler_name: Optional[str], scheduler: Optional[str], flow: bool = False) -> Resolved:
    """Our scheduler for A1111's sampler (name or alias, optionally with the schedule type appended) and schedule
    type; one sentence naming what is known when the pair is not one we can run. On a flow-matching model (`flow`)
    "Automatic" is the model's own sigmas, not the sampler's usual Karras."""
    name = (sampler_name or DEFAULT_SAMPLER).strip()
    schedule = (scheduler or "automatic").strip().lower()
    for type_name, label in SCHEDULE_TYPES.items():  # "DPM++ 2M Karras": the pre-1.9 way of naming the type
        if name.lower().endswith(" " + label.lower()):
            name, schedule = name[: -len(label) - 1], type_name
            break
    schedule = {label.lower(): type_name for type_name, label in SCHEDULE_TYPES.items()}.get(schedule, schedule)
    sampler = SAMPLERS_BY_NAME.get(name.lower())
    if sampler is None:
        raise InputError(
            f"Unknown sampler '{name}'; this service runs: {', '.join(s.name for s in SAMPLERS)} (GET "
            "/sdapi/v1/samplers)."
        )
    if schedule not in SCHEDULE_TYPES:
        raise InputError(
            f"Unknown schedule type '{scheduler}'; this service runs: {', '.join(SCHEDULE_TYPES.values())}."
        )
    effective = ("normal" if flow else sampler.default_type) if schedule == "automatic" else schedule
    if effective not in sampler.schedulers:
        known = ", ".join(SCHEDULE_TYPES[t] for t in ("automatic", *sampler.schedulers) if t in SCHEDULE_TYPES)
        raise InputError(f"Sampler '{sampler.name}' runs here with the schedule types {known}, not '{scheduler}'.")
    label = SCHEDULE_TYPES[effective] if schedule != "automatic" or effective != "normal" else "Automatic"
    return Resolved(sampler.schedulers[effective], sampler.name, label)


# The samplers a flow-matching model (SD 3, FLUX) runs, with its own sigmas: the flow Euler and DPM++ 2M on flow sigmas.
FLOW_SAMPLERS = ("DPM++ 2M", "Euler")


def samplers_listing(flow: bool = False) -> list[dict]:
    """GET /sdapi/v1/samplers, in A1111's shape: the ones the loaded model runs (`flow`: a flow-matching model)."""
    offered = [s for s in SAMPLERS if not flow or s.name in FLOW_SAMPLERS]
    return [{"name": s.name, "aliases": list(s.aliases), "options": dict(s.options)} for s in offered]


def schedulers_listing() -> list[dict]:
    """GET /sdapi/v1/schedulers, in A1111's shape."""
    rho = {"karras": 7.0}
    return [
        {"name": name, "label": label, "aliases": None, "default_rho": rho.get(name, -1.0), "need_inner_model": False}
        for name, label in SCHEDULE_TYPES.items()
    ]


def describe_scheduler(ours: str) -> Resolved:
    """A1111's names for a scheduler of ours (the first sampler and type that map to it); ours when none does."""
    for sampler in SAMPLERS:
        for schedule, scheduler in sampler.schedulers.items():
            if scheduler == ours:
                label = "Automatic" if schedule == sampler.default_type else SCHEDULE_TYPES[schedule]
                return Resolved(ours, sampler.name, label)
    return Resolved(ours, f"inpaintkit {ours}", "Automatic")
