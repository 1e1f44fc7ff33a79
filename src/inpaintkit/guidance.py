"""How the denoiser's predictions are combined into one: classifier-free guidance, or none.

A small part of its own (after Stability's `sgm` guiders), so the loop does not know which is used and a
family can bring another (Flux's embedded guidance is a setting of the denoiser, not a second batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ClassifierFreeGuidance:
    """Ho & Salimans (arXiv 2207.12598): one batched call on [unconditional, conditional], then
    u + scale * (c - u). The unconditional half comes first, as in diffusers, so seeds and pixels match."""

    scale: float

    def prompts(self, prompt: str, negative_prompt: str) -> list[tuple[str, bool]]:
        """The texts to encode, each with whether it is the unconditional one, in batch order."""
        return [(negative_prompt, True), (prompt, False)]

    def batch(self, model_input: torch.Tensor) -> torch.Tensor:
        return torch.cat([model_input] * 2)

    def combine(self, prediction: torch.Tensor) -> torch.Tensor:
        unconditional, conditional = prediction.chunk(2)
        return unconditional + self.scale * (conditional - unconditional)


@dataclass(frozen=True)
class NoGuidance:
    """One call on the prompt alone (guidance <= 1, as diffusers decides it): half the work."""

    def prompts(self, prompt: str, negative_prompt: str) -> list[tuple[str, bool]]:
        return [(prompt, False)]

    def batch(self, model_input: torch.Tensor) -> torch.Tensor:
        return model_input

    def combine(self, prediction: torch.Tensor) -> torch.Tensor:
        return prediction


Guidance = ClassifierFreeGuidance | NoGuidance


def guidance_for(scale: float) -> Guidance:
    return ClassifierFreeGuidance(scale) if scale > 1.0 else NoGuidance()
