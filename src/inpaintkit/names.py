"""The names and defaults the command line offers, importable without torch or diffusers.

`inpaintkit --help` and argument errors must answer in a fraction of a second, but several of the
choices argparse needs at build time are defined next to torch code (the methods, the loader, the
acceleration options), and importing those modules costs seconds. They are restated here.

Each constant below that also exists in a torch module is checked equal to it by
tests/test_cli_startup.py, so the two cannot drift; the plan is for those modules to import them
from here instead, leaving one definition.
"""

from __future__ import annotations

# models.DEFAULT_MODEL
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-inpainting"

# The --dtype choices: "auto" and the keys of devices.DTYPES (which maps them to torch dtypes).
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")

# acceleration.TILING_MODES and acceleration.AUTO_TILING_PIXELS
TILING_MODES = ("auto", "on", "off")
AUTO_TILING_PIXELS = 1024 * 1024

# Each method's name and one-line summary (its class's `name` and `summary`), in the registry's order (methods.METHODS).
METHOD_SUMMARIES: dict[str, str] = {
    "native": "Dedicated inpainting checkpoint (9-channel UNet); no latent blending.",
    "blend": "Per-step latent blending: works with any checkpoint, 4- or 9-channel.",
    "bld": "Blended Latent Diffusion: blend from pure noise, progressive mask shrinking, background reconstruction.",
    "soft": "Per-pixel strength from a grayscale mask (Differential Diffusion); --mask-blur reaches the denoiser.",
    "repaint": "RePaint resampling: go back up in noise and redo steps so the hole agrees with its border (about r times slower).",
    "tdpaint": "Ablation: the known region is shown to the UNet at a small constant noise level (zero-shot TD-Paint).",
}
METHOD_NAMES = ("auto", *METHOD_SUMMARIES)  # the only definition: methods imports it from here

# methods.bld.RECONSTRUCTIONS
RECONSTRUCTIONS = ("none", "pixel", "poisson", "optimize")

# evaluation.learned_metrics.DEFAULT_CLIP_MODEL and KID_FEATURES
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"  # BrushBench's choice
KID_FEATURES = ("inception", "clip")

# The seed of every bench sample and method unless --seed is given (the only definition).
DEFAULT_SEED = 0
