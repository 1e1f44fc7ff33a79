"""Write a diffusers-format SDXL folder as one original (SGM / Stability "generative-models") checkpoint file.

The inverse of what diffusers' `from_single_file` does with an SDXL file (diffusers/loaders/single_file_utils.py):
`convert_ldm_unet_checkpoint` (incl. the `label_emb` keys of SDXL's text-and-time embedding) and
`convert_ldm_vae_checkpoint` (shared with SD 1.x: ldm_checkpoint.py), `convert_ldm_clip_checkpoint` for the first
text encoder under `conditioner.embedders.0.transformer.`, and `convert_open_clip_checkpoint` for the second under
`conditioner.embedders.1.model.` in OpenCLIP's own layout (fused q/k/v `in_proj`, a bare `text_projection` matrix
applied as `x @ text_projection`). These are the prefixes of the files distributed on model sites.

    write_sdxl_checkpoint(Path("tiny-sdxl"), Path("tiny-sdxl.safetensors"))  # or ".ckpt"
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .ldm_checkpoint import convert_clip, convert_unet, convert_vae, load_weights, save_checkpoint

CLIP_L_PREFIX = "conditioner.embedders.0.transformer.text_model."
OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

# HF CLIPTextModelWithProjection names (after `text_model.`) -> OpenCLIP names, outside the layers.
OPEN_CLIP_NAMES = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}
# ... and inside a layer (`encoder.layers.N.` -> `transformer.resblocks.N.`).
OPEN_CLIP_LAYER_PARTS = {
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
    "self_attn.out_proj.": "attn.out_proj.",
}
_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")


def write_sdxl_checkpoint(diffusers_folder: Path, out_path: Path) -> Path:
    """Convert the folder's unet, vae, text_encoder and text_encoder_2 to one SGM-layout file."""
    folder, out_path = Path(diffusers_folder), Path(out_path)
    unet_config = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    vae_config = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
    state_dict = {
        **convert_unet(load_weights(folder / "unet"), unet_config),
        **convert_vae(load_weights(folder / "vae"), vae_config),
        **convert_clip(load_weights(folder / "text_encoder"), prefix=CLIP_L_PREFIX),
        **convert_open_clip(load_weights(folder / "text_encoder_2")),
    }
    return save_checkpoint(state_dict, out_path)


def convert_open_clip(weights: dict[str, torch.Tensor], prefix: str = OPEN_CLIP_PREFIX) -> dict[str, torch.Tensor]:
    """HF CLIPTextModelWithProjection keys -> OpenCLIP's: q/k/v fused into `attn.in_proj_weight/bias` (in that
    order), and the projection stored as the transposed matrix `text_projection` (no `.weight`)."""
    converted, fused = {}, {}
    for key, tensor in weights.items():
        if key == "text_projection.weight":
            converted[prefix + "text_projection"] = tensor.T
            continue
        name = key.removeprefix("text_model.")
        if name in OPEN_CLIP_NAMES:
            converted[prefix + OPEN_CLIP_NAMES[name]] = tensor
            continue
        match = _LAYER.match(name)
        if match is None:
            raise KeyError(f"no OpenCLIP name known for {key!r}")
        layer, rest = match.groups()
        block = f"{prefix}transformer.resblocks.{layer}."
        projection = re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", rest)
        if projection is not None:
            which, kind = projection.groups()
            fused.setdefault((block, kind), {})[which] = tensor
            continue
        for old, new in OPEN_CLIP_LAYER_PARTS.items():
            if rest.startswith(old):
                converted[block + new + rest[len(old) :]] = tensor
                break
        else:
            raise KeyError(f"no OpenCLIP name known for {key!r}")
    for (block, kind), parts in fused.items():
        converted[f"{block}attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return converted
