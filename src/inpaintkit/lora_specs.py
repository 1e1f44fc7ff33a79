"""What a LoRA request is: a source (a file, a folder or a hub id; on the service, a name in --loras-dir) and a weight.

Light (no torch), so settings and the CLI's parser can check it at once; loras.py loads and switches them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InputError

MAX_LORAS = 16  # per job: far above the usual two or three, and each one costs every UNet call a little
# A1111's prompts use weights of about -2..2; beyond 4 a LoRA's update swamps the base weights and gives noise.
MAX_WEIGHT = 4.0


@dataclass(frozen=True)
class LoraSpec:
    source: str
    weight: float = 1.0

    def __str__(self) -> str:
        return f"{self.source}:{self.weight:g}"


def parse_lora(text: str) -> LoraSpec:
    """`SOURCE[:WEIGHT]`; the weight is the part after the last colon when it is a number (so `C:\\x.safetensors` and
    hub ids stay whole). One sentence for a bad one."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("A LoRA is given as SOURCE[:WEIGHT] (a file, a folder or a hub id), not an empty text.")
    text = text.strip()
    head, colon, tail = text.rpartition(":")
    source, weight = (head.strip(), number(tail)) if colon and number(tail) is not None else (text, 1.0)
    if not source:
        raise InputError(f"LoRA {text!r} names no file, folder or hub id before its weight.")
    if not math.isfinite(weight) or abs(weight) > MAX_WEIGHT:
        raise InputError(f"LoRA {source}: the weight must be from -{MAX_WEIGHT:g} to {MAX_WEIGHT:g}, got {tail}.")
    return LoraSpec(source, weight)


def parse_loras(texts) -> tuple[LoraSpec, ...]:
    specs = tuple(parse_lora(text) for text in texts)
    if len(specs) > MAX_LORAS:
        raise InputError(f"A job may use at most {MAX_LORAS} LoRAs, got {len(specs)}.")
    sources = [spec.source for spec in specs]
    repeated = sorted({source for source in sources if sources.count(source) > 1})
    if repeated:
        raise InputError(f"LoRA {repeated[0]} is given more than once; give it once with the weight you want.")
    return specs


def number(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def looks_local(source: str) -> bool:
    """A path on this machine, not a hub id: a missing one is an error, not something a download could find."""
    return source.startswith((".", "/", "~")) or source.lower().endswith(".safetensors")


def missing_local_files(specs: tuple[LoraSpec, ...], root: str | None) -> None:
    """One sentence, before the model loads, for a LoRA that names a local file that is not there (a name in `root`
    when one is given). A source that does not look local may be a hub id: only loading can tell."""
    from pathlib import Path

    for spec in specs:
        source = spec.source
        if root is not None:
            if not (Path(root) / source).exists() and not (Path(root) / f"{source}.safetensors").exists():
                raise InputError(f"LoRA {source} is not in --loras-dir {root}.")
        elif looks_local(source) and not Path(source).expanduser().exists():
            raise InputError(f"LoRA {source}: no such file or folder.")
