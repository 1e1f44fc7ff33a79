"""The names and defaults the command line offers, importable without torch, numpy or diffusers.

`inpaintkit --help` and argument errors must answer in a fraction of a second, so the choices
argparse needs at build time are defined here, and the modules that use them (next to torch code)
import them from here.
"""

from __future__ import annotations

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-inpainting"

# The --dtype choices: "auto" and the keys of devices.DTYPES (which maps them to torch dtypes).
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")

# --vae-tiling. Above 1 megapixel the SD 1.5 VAE decoder's activations pass 4 GB in fp16 (issue 8's
# 2048x2048 target is 8 GB for the whole job), so auto tiles there.
TILING_MODES = ("auto", "on", "off")
AUTO_TILING_PIXELS = 1024 * 1024

# Each method's name and one-line summary (for --help and the UI; Method subclasses read theirs from here),
# in the registry's order (methods.METHODS).
METHOD_SUMMARIES: dict[str, str] = {
    "native": "Dedicated inpainting checkpoint (9-channel UNet); no latent blending.",
    "blend": "Per-step latent blending: works with any checkpoint, 4- or 9-channel.",
    "bld": "Blended Latent Diffusion: blend from pure noise, progressive mask shrinking, background reconstruction.",
    "soft": "Per-pixel strength from a grayscale mask (Differential Diffusion); --mask-blur reaches the denoiser.",
    "repaint": "RePaint resampling: go back up in noise and redo steps so the hole agrees with its border (about r "
    "times slower).",
    "tdpaint": "Ablation: the known region is shown to the UNet at a small constant noise level (zero-shot TD-Paint).",
    "latentpaint": "LatentPaint: blend, plus the UNet's hidden states take a context pass's in the known region at "
    "every block (about 2x blend's time).",
    "lanpaint": "LanPaint: Langevin iterations before each step pull the hole and the known region into agreement "
    "(up to 1 + --lanpaint-steps model calls per step).",
}
METHOD_NAMES = ("auto", *METHOD_SUMMARIES)

# latentpaint's --fuse-blocks: which of the UNet's down, mid and up blocks fuse hidden states ("all": the three)
FUSE_BLOCKS = ("all", "down+mid", "mid+up", "down+up", "down", "mid", "up", "none")

# bld's --reconstruct
RECONSTRUCTIONS = ("none", "pixel", "poisson", "optimize")

# evaluation: the CLIP model and KID feature choices, and PIPE's hub datasets
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"  # BrushBench's choice
KID_FEATURES = ("inception", "clip")
PIPE_IMAGES = "paint-by-inpaint/PIPE"
PIPE_MASKS = "paint-by-inpaint/PIPE_Masks"

# What the masked area starts as before noising (fill.py)
FILLS = ("original", "telea", "ns", "blur", "noise", "grey")

# The families `inpaintkit make-tiny-model --family` writes (tiny.py)
TINY_FAMILIES = ("sd", "sdxl", "sd3", "flux", "flux-fill")

# The seed of every bench sample and method unless --seed is given (the only definition).
DEFAULT_SEED = 0

# The most images one Inpainter call makes: they are one batch, in memory together. The CLI's --batch-size is
# bounded by it and splits a larger --num-images into several calls.
MAX_BATCH_IMAGES = 64

# The most images one job may ask for (a CLI run writes them in --batch-size batches): a job's work and its list of
# output names must be bounded before it starts (a --num-images of 2^32 built 4 billion paths; issue 13).
MAX_JOB_IMAGES = 10_000

# The longest prompt or negative prompt, in characters. CLIP reads 77 tokens (a few hundred characters) and T5
# 512; far longer text only costs tokenizing time (a 10 MB prompt held a service's worker for 101 s; issue 13).
MAX_TEXT_LENGTH = 10_000
