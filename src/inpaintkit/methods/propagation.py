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

from ..errors import InputError

FILE_FORMAT = "inpaintkit-latentpaint-propagation"
FILE_VERSION = "1"
HIDDEN_FACTOR = 4  # phi's hidden width, in multiples of the block's channels (as the reimplementation's MLP)


class Propagation(nn.Module):
    """phi for one block of `channels` channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.phi = nn.Sequential(
            nn.Linear(channels, channels * HIDDEN_FACTOR), nn.SiLU(), nn.Linear(channels * HIDDEN_FACTOR, channels)
        )
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
    (feature_fusion.unet_architecture), in one sentence when it does not fit."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--latentpaint-weights {path}: no such file.")
    try:
        with safe_open(str(path), framework="pt") as opened:
            metadata = opened.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"--latentpaint-weights {path} is not a safetensors file ({error}).") from None
    if metadata.get("format") != FILE_FORMAT:
        raise InputError(
            f"--latentpaint-weights {path} is not a LatentPaint propagation file (write one with inpaintkit "
            "train-latentpaint)."
        )
    if metadata.get("architecture") != architecture:
        raise InputError(
            f"--latentpaint-weights {path} was trained on {metadata.get('trained_on', 'another model')}, a UNet of "
            f"another architecture ({describe(metadata.get('architecture'))}) than this model's "
            f"({describe(architecture)}); train one for this model."
        )
    channels_by_block = {name: int(c) for name, c in json.loads(metadata["channels_by_block"]).items()}
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    modules = PropagationModules(channels_by_block, source=f"{path.name} (sha256 {digest})")
    try:
        modules.load_state_dict(tensors)
    except RuntimeError as error:
        raise InputError(f"--latentpaint-weights {path} holds tensors of the wrong shapes ({error}).") from None
    return modules.eval().requires_grad_(False)


def describe(architecture: str | None) -> str:
    """The architecture's fields as 'name value' pairs, for a message."""
    if architecture is None:
        return "not recorded"
    return ", ".join(f"{name} {value}" for name, value in json.loads(architecture).items())
