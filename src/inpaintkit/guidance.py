"""How the denoiser's predictions are combined into one: classifier-free guidance, none, or guidance the denoiser
takes as an input (embedded: an LCM UNet's `timestep_cond`, FLUX's `guidance`).

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

    def extras(self, batch: int, device, dtype) -> dict[str, torch.Tensor]:
        return {}


@dataclass(frozen=True)
class NoGuidance:
    """One call on the prompt alone (guidance <= 1, as diffusers decides it): half the work."""

    def prompts(self, prompt: str, negative_prompt: str) -> list[tuple[str, bool]]:
        return [(prompt, False)]

    def batch(self, model_input: torch.Tensor) -> torch.Tensor:
        return model_input

    def combine(self, prediction: torch.Tensor) -> torch.Tensor:
        return prediction

    def extras(self, batch: int, device, dtype) -> dict[str, torch.Tensor]:
        return {}


@dataclass(frozen=True)
class EmbeddedGuidance(NoGuidance):
    """A guidance-distilled denoiser (Latent Consistency Models, Luo et al., arXiv 2310.04378) is told the scale as an
    input: one call on the prompt, the scale w - 1 as VDM's sinusoidal embedding (`timestep_cond`), as diffusers'
    pipelines do for a UNet with `time_cond_proj_dim`."""

    scale: float = 1.0
    dim: int = 256

    def extras(self, batch: int, device, dtype) -> dict[str, torch.Tensor]:
        w = torch.tensor(self.scale - 1.0).repeat(batch) * 1000.0  # float32 in diffusers' order: the same bits
        half = self.dim // 2
        step = torch.log(torch.tensor(10000.0)) / (half - 1)
        angles = w[:, None] * torch.exp(torch.arange(half, dtype=torch.float32) * -step)[None, :]
        embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
        if self.dim % 2:
            embedding = torch.nn.functional.pad(embedding, (0, 1))
        return {"timestep_cond": embedding.to(device=device, dtype=dtype)}


@dataclass(frozen=True)
class DistilledGuidance:
    """FLUX's guidance: the scale distilled into the model (guidance distillation, Meng et al., arXiv 2210.03142) as
    the transformer's `guidance` input, None for a model without one (FLUX.1 schnell), around either one call on the
    prompt or "true" classifier-free guidance with the negative prompt."""

    scale: float | None
    classifier_free: ClassifierFreeGuidance | NoGuidance

    def prompts(self, prompt: str, negative_prompt: str) -> list[tuple[str, bool]]:
        return self.classifier_free.prompts(prompt, negative_prompt)

    def batch(self, model_input: torch.Tensor) -> torch.Tensor:
        return self.classifier_free.batch(model_input)

    def combine(self, prediction: torch.Tensor) -> torch.Tensor:
        return self.classifier_free.combine(prediction)

    def extras(self, batch: int, device, dtype) -> dict[str, torch.Tensor]:
        if self.scale is None:
            return {}
        # float32 whatever the model's dtype, as diffusers makes it
        return {"guidance": torch.full([batch], self.scale, device=device, dtype=torch.float32)}


Guidance = ClassifierFreeGuidance | NoGuidance | EmbeddedGuidance | DistilledGuidance


def guidance_for(scale: float, embedding_dim: int | None = None) -> Guidance:
    """CFG above 1, none at or below; a guidance-distilled UNet (`embedding_dim`) takes the scale as an input."""
    if embedding_dim is not None:
        return EmbeddedGuidance(scale, embedding_dim)
    return ClassifierFreeGuidance(scale) if scale > 1.0 else NoGuidance()
