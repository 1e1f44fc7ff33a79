"""Recipes for the few-step models: the steps, guidance, scheduler and timestep spacing each is made for.

`inpaintkit run --preset NAME` applies one to the settings left at their defaults (a value you give wins); from
Python, `inpainter(image, mask, prompt, **PRESETS["lcm-lora"])`. Light (no torch): the CLI's parser reads the names.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # An LCM-distilled UNet (Luo et al., arXiv 2310.04378) takes the scale as an embedding (no CFG batch); 8 is the
    # paper's and LCM-Dreamshaper's w.
    "lcm": {"steps": 4, "guidance": 8.0, "scheduler": "lcm"},
    # LCM-LoRA (Luo et al., arXiv 2311.05556) on an ordinary UNet: guidance 1 turns CFG off, as its card says.
    "lcm-lora": {"steps": 4, "guidance": 1.0, "scheduler": "lcm"},
    # TCD-LoRA (Zheng et al., arXiv 2402.19159): 4 steps, no CFG (its card also shows eta 0.3; ours is 0).
    "tcd": {"steps": 4, "guidance": 1.0, "scheduler": "tcd"},
    # SDXL-Lightning (Lin et al., arXiv 2402.13929) 4-step: Euler, trailing spacing, no CFG.
    "lightning": {"steps": 4, "guidance": 1.0, "scheduler": "euler", "spacing": "trailing"},
    # Hyper-SD (Ren et al., arXiv 2404.13686) 8-step LoRA: DDIM, trailing spacing, no CFG.
    "hyper": {"steps": 8, "guidance": 1.0, "scheduler": "ddim", "spacing": "trailing"},
    # SDXL-Turbo (Sauer et al., adversarial diffusion distillation): one step, guidance 0, Euler ancestral, trailing.
    "turbo": {"steps": 1, "guidance": 0.0, "scheduler": "euler-a", "spacing": "trailing"},
}
PRESET_NAMES = tuple(PRESETS)


# The settings a preset sets. Their CLI flags default to None (not given), so a value typed at its default still wins.
PRESET_KEYS = ("steps", "guidance", "scheduler", "spacing")


def with_preset(name: str | None, values: dict[str, Any]) -> dict[str, Any]:
    """`values` with the preset's settings where a value was not given (None); keys still None are left out, so the
    settings' own defaults apply."""
    chosen = PRESETS[name] if name else {}
    settled = dict(values)
    for key in PRESET_KEYS:
        if settled.get(key) is None:
            if key in chosen:
                settled[key] = chosen[key]
            else:
                settled.pop(key, None)
    return settled
