"""LatentPaint's explicit propagation (known -> unknown) as small trained modules, one per UNet block, and their file.

Our reconstruction (the paper's text could not be read; see latentpaint.py): at a block whose hidden states h were
fused, the known cells' features are max-pooled per channel (the reading of "Eq. 12" in the one public
reimplementation), a two-layer MLP phi maps them to a per-channel offset, and the offset is added to the cells being
generated:

    h <- h + s * m_l * phi(max over known cells of h)          (m_l: the mask at the block's resolution, 1 = generate)

Unlike that reimplementation (which replaced h by the broadcast MLP output everywhere and re-created phi untrained on
every call), the offset is residual and phi's last layer starts at zero, so an untrained module changes nothing, and
phi is trained once (`inpaintkit train-latentpaint`) and loaded from a file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, first_line

FILE_FORMAT = "inpaintkit-latentpaint-propagation"
FILE_VERSION = "1"
# phi's hidden width: a quarter of the block's channels. The reimplementation's 4x made SD 1.5's file 295 MB (74 M
# parameters over its 9 blocks); a quarter keeps it at 18 MB (4.6 M) for a per-channel offset.
HIDDEN_DIVISOR = 4


class Propagation(nn.Module):
    """phi for one block of `channels` channels."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(channels // HIDDEN_DIVISOR, 8)
        self.phi = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, channels))
        nn.init.zeros_(self.phi[-1].weight)  # untrained = no propagation
        nn.init.zeros_(self.phi[-1].bias)

    def forward(self, hidden: torch.Tensor, generate: torch.Tensor, scale: float) -> torch.Tensor:
        """`hidden` BxCxHxW; `generate` Bx1xHxW in [0, 1] (1 = generate). Returns the propagated hidden states."""
        known = generate < 1.0  # a cell with any known content
        pooled = hidden.masked_fill(~known, float("-inf")).amax(dim=(2, 3))
        pooled = torch.where(known.flatten(1).any(dim=1, keepdim=True), pooled, torch.zeros_like(pooled))
        offset = self.phi(pooled.to(self.phi[0].weight.dtype)).to(hidden.dtype)
        return hidden + scale * generate * offset[:, :, None, None]


class PropagationModules(nn.Module):
    """phi for each block it was trained at, by block name ("down_blocks.0", "mid_block", "up_blocks.3")."""

    def __init__(self, channels_by_block: dict[str, int], source: str = ""):
        super().__init__()
        self.channels_by_block = dict(channels_by_block)
        self.blocks = nn.ModuleDict({key(name): Propagation(c) for name, c in channels_by_block.items()})
        self.source = source  # what the metadata names: the file and its digest

    def at(self, block: str) -> Propagation | None:
        return self.blocks[key(block)] if key(block) in self.blocks else None

    def to_bytes(self, trained_on: str, steps: int, architecture: str) -> bytes:
        """The file's contents (safetensors, fp32, with what it was trained on in its metadata)."""
        from safetensors.torch import save

        tensors = {name: value.detach().float().cpu().contiguous() for name, value in self.state_dict().items()}
        metadata = {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "channels_by_block": json.dumps(self.channels_by_block),
            "trained_on": trained_on,
            "architecture": architecture,
            "training_steps": str(steps),
        }
        return save(tensors, metadata=metadata)


def key(block: str) -> str:
    return block.replace(".", "_")  # ModuleDict keys cannot hold dots


def load_propagation(path: str | Path, architecture: str) -> PropagationModules:
    """Read a file written by `train-latentpaint`, checked against this UNet's `architecture`
    (feature_fusion.unet_architecture) and against itself, in one sentence naming the file when it does not fit."""
    from safetensors.torch import load

    path = Path(path)
    where = f"--latentpaint-weights {path}"
    try:
        data = path.read_bytes()  # read once: the tensors, the metadata and the digest come from these bytes
        tensors = load(data)
        metadata = safetensors_metadata(data)
    except FileNotFoundError:
        raise InputError(f"{where}: no such file.") from None
    except IsADirectoryError:
        raise InputError(f"{where} is a folder, not a file.") from None
    except Exception as error:  # safetensors' own error types differ between versions; any failure here is the file's
        raise InputError(f"{where} is not a safetensors file ({first_line(error)}).") from None
    if metadata.get("format") != FILE_FORMAT:
        raise InputError(f"{where} is not a LatentPaint propagation file (inpaintkit train-latentpaint writes one).")
    trained = describe(metadata.get("architecture"), where)
    if metadata.get("architecture") != architecture:
        raise InputError(
            f"{where} was trained on {metadata.get('trained_on', 'another model')}, a UNet of another architecture "
            f"({trained}) than this model's ({describe(architecture, 'this model')}); train one for this model."
        )
    modules = PropagationModules(
        channels_by_block(metadata.get("channels_by_block"), where),
        source=f"{path.name} (sha256 {hashlib.sha256(data).hexdigest()[:12]})",
    )
    expected = modules.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    misshapen = sorted(name for name in set(expected) & set(tensors) if tensors[name].shape != expected[name].shape)
    if missing or unexpected or misshapen:
        raise InputError(
            f"{where} holds tensors that do not match its own block list (missing {len(missing)}, unexpected "
            f"{len(unexpected)}, of the wrong shape {len(misshapen)}, e.g. {(missing + unexpected + misshapen)[0]})."
        )
    if not all(torch.isfinite(tensor).all() for tensor in tensors.values()):
        raise InputError(f"{where} holds NaN or infinite weights (a diverged training?); train it again.")
    modules.load_state_dict(tensors)
    return modules.eval().requires_grad_(False)


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors file's JSON header (an 8-byte little-endian length, then the header)."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    metadata = header.get("__metadata__") or {}
    return metadata if isinstance(metadata, dict) else {}


def channels_by_block(text, where: str) -> dict[str, int]:
    """The file's block list, checked: a JSON object of UNet block names and positive channel counts."""
    try:
        value = json.loads(text)
        if (
            isinstance(value, dict)
            and value
            and all(
                isinstance(name, str) and isinstance(channels, int) and not isinstance(channels, bool) and channels > 0
                for name, channels in value.items()
            )
        ):
            return value
    except (TypeError, ValueError):
        pass
    raise InputError(f"{where} has a damaged block list in its metadata; write it again with train-latentpaint.")


def describe(architecture, where: str) -> str:
    """The architecture's fields as 'name value' pairs, for a message; one sentence when they cannot be read."""
    try:
        fields = json.loads(architecture)
        if isinstance(fields, dict):
            return ", ".join(f"{name} {value}" for name, value in fields.items())
    except (TypeError, ValueError):
        pass
    raise InputError(f"{where} has no readable UNet architecture in its metadata; write it again (train-latentpaint).")
