"""LatentPaint's fusion of the denoiser's hidden states, as forward hooks on the UNet's blocks.

The UNet is called on a stacked batch [generation pass, context pass] (each with its guidance halves in order).
After each hooked block, the generation pass's hidden states take the context pass's where the mask, average-pooled
to the block's resolution, says "known" ("Eq. 11" as the public reimplementation reads it):

    h_gen <- m_l * h_gen + (1 - m_l) * h_ctx          (m_l = 1: generate)

A down block's skip connections (the tensors the up blocks read) are fused the same way. Then, where a trained
propagation module is loaded for the block, it adds its offset to the cells being generated (propagation.py).
"""

from __future__ import annotations

import contextlib
import json
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .propagation import PropagationModules

BLOCK_GROUPS = ("down", "mid", "up")


def block_groups(choice: str) -> tuple[str, ...]:
    """The groups a --fuse-blocks choice names: "all", "none", or groups joined by "+" ("mid+up")."""
    if choice == "all":
        return BLOCK_GROUPS
    return () if choice == "none" else tuple(choice.split("+"))


def unet_blocks(unet: nn.Module, groups: tuple[str, ...] = BLOCK_GROUPS) -> dict[str, nn.Module]:
    """The UNet's blocks in the named groups, by their module names, in the order the UNet runs them."""
    blocks: dict[str, nn.Module] = {}
    if "down" in groups:
        blocks.update({f"down_blocks.{k}": block for k, block in enumerate(unet.down_blocks)})
    if "mid" in groups and unet.mid_block is not None:
        blocks["mid_block"] = unet.mid_block
    if "up" in groups:
        blocks.update({f"up_blocks.{k}": block for k, block in enumerate(unet.up_blocks)})
    return blocks


def block_channels(unet: nn.Module) -> dict[str, int]:
    """Each block's output channels (what a propagation module for it takes)."""
    return {name: block.resnets[-1].out_channels for name, block in unet_blocks(unet).items()}


def require_unet(components) -> None:
    """LatentPaint's fusion, its trained module and its training hook a UNet's down, mid and up blocks: refuse a
    transformer in one sentence before anything reads those blocks."""
    if components.family.denoiser != "unet":
        raise InputError(
            "LatentPaint fuses a UNet's down, mid and up block features, and this "
            f"{components.family.name} model's denoiser is a transformer; use lanpaint, blend or native."
        )


def unet_architecture(unet: nn.Module) -> str:
    """What a propagation module depends on, as one JSON string: weights trained for one UNet fit only UNets with
    the same (checkpoints of the same architecture share it, as LoRAs do)."""
    config = unet.config
    return json.dumps(
        {
            "in_channels": config.in_channels,
            "block_out_channels": list(config.block_out_channels),
            "down_block_types": list(config.down_block_types),
            "cross_attention_dim": config.cross_attention_dim,
            "addition_embed_type": config.addition_embed_type,
        },
        sort_keys=True,
    )


class FeatureFusion:
    """The hooks' state for one job (or one training batch): the generation pass's mask and what to propagate."""

    def __init__(
        self,
        blocks: dict[str, nn.Module],
        generate: torch.Tensor,
        propagation: Optional[PropagationModules] = None,
        scale: float = 1.0,
    ):
        self.blocks = blocks
        self.propagation = propagation
        self.scale = scale
        self.active = False  # only calls on a stacked batch fuse; others pass through untouched
        self.set_mask(generate)

    def set_mask(self, generate: torch.Tensor) -> None:
        """`generate`: Bx1xhxw at the latents' resolution, B the generation pass's batch (guidance halves included)."""
        self.generate = generate
        self._pooled: dict[tuple[int, int], torch.Tensor] = {}

    def mask_at(self, size: tuple[int, int]) -> torch.Tensor:
        if size not in self._pooled:
            self._pooled[size] = F.adaptive_avg_pool2d(self.generate, size)
        return self._pooled[size]

    @contextlib.contextmanager
    def attached(self) -> Iterator[FeatureFusion]:
        """The hooks on the blocks while the context lasts; removed on leaving, however it is left."""
        handles = []
        try:
            for name, block in self.blocks.items():
                handles.append(block.register_forward_hook(self._hook(name)))
            yield self
        finally:
            for handle in handles:
                handle.remove()

    @contextlib.contextmanager
    def fusing(self) -> Iterator[None]:
        """Fuse during the calls inside (which must be on the stacked batch)."""
        self.active = True
        try:
            yield
        finally:
            self.active = False

    def _hook(self, name: str):
        module = self.propagation.at(name) if self.propagation is not None else None

        def fuse(block: nn.Module, args, output):
            if not self.active:
                return output
            if isinstance(output, tuple):  # a down block: (hidden states, the skip connections it hands up)
                hidden, skips = output
                fused = {id(hidden): self._fuse(hidden)}
                for skip in skips:
                    if id(skip) not in fused:
                        fused[id(skip)] = self._fuse(skip)
                return self._propagate(fused[id(hidden)], module), tuple(fused[id(skip)] for skip in skips)
            return self._propagate(self._fuse(output), module)

        return fuse

    def _fuse(self, hidden: torch.Tensor) -> torch.Tensor:
        generation, context = hidden.chunk(2)
        generate = self.mask_at(tuple(hidden.shape[-2:])).to(hidden.dtype)
        return torch.cat([generate * generation + (1 - generate) * context, context])

    def _propagate(self, hidden: torch.Tensor, module) -> torch.Tensor:
        if module is None or self.scale == 0.0:
            return hidden
        generation, context = hidden.chunk(2)
        generate = self.mask_at(tuple(hidden.shape[-2:])).to(hidden.dtype)
        return torch.cat([module(generation, generate, self.scale), context])
