"""Write a diffusers-format Stable Diffusion folder as one original (LDM/CompVis) checkpoint file.

This is the inverse of diffusers' `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint` and
`convert_ldm_clip_checkpoint` (diffusers/loaders/single_file_utils.py), in the spirit of the diffusers
script `scripts/convert_diffusers_to_original_stable_diffusion.py`, but driven by the folder's configs
instead of hard-coding SD 1.x's four blocks of two layers. Only the UNet, the VAE and a CLIP text encoder
are written (as in real SD 1.x checkpoints); the tokenizer and scheduler are not part of the format.

    write_ldm_checkpoint(Path("tiny-model"), Path("tiny.safetensors"))  # or "tiny.ckpt"
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
VAE_ATTENTION_PARTS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def write_ldm_checkpoint(diffusers_folder: Path, out_path: Path) -> Path:
    """Convert the folder's unet, vae and text_encoder to one LDM-layout `.safetensors` or `.ckpt` file."""
    folder, out_path = Path(diffusers_folder), Path(out_path)
    unet_config = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    vae_config = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
    state_dict = {
        **convert_unet(load_weights(folder / "unet"), unet_config),
        **convert_vae(load_weights(folder / "vae"), vae_config),
        **convert_clip(load_weights(folder / "text_encoder")),
    }
    return save_checkpoint(state_dict, out_path)


def save_checkpoint(state_dict: dict[str, torch.Tensor], out_path: Path) -> Path:
    """Save an LDM-layout state dict as `.safetensors`, or as a `.ckpt` holding {"state_dict": ...}."""
    state_dict = {key: tensor.contiguous() for key, tensor in state_dict.items()}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.suffix == ".safetensors":
        save_file(state_dict, str(out_path), metadata={"format": "pt"})
    elif out_path.suffix == ".ckpt":
        torch.save({"state_dict": state_dict}, out_path)
    else:
        raise ValueError(f"out_path must end with .safetensors or .ckpt, not {out_path.name!r}")
    return out_path


def load_weights(component: Path) -> dict[str, torch.Tensor]:
    """Load a component's (unsharded) weights: safetensors if present, else a pickled .bin."""
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
        if (component / name).is_file():
            return load_file(str(component / name))
    for name in ("diffusion_pytorch_model.bin", "pytorch_model.bin"):
        if (component / name).is_file():
            return torch.load(component / name, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no unsharded weights file in {component}")


def _rename(key: str, prefixes: dict[str, str]) -> tuple[str, str]:
    """Split `key` at the longest matching diffusers prefix; return (ldm prefix, rest of the key)."""
    matches = [prefix for prefix in prefixes if key.startswith(prefix)]
    if not matches:
        raise KeyError(f"no LDM name known for {key!r}")
    prefix = max(matches, key=len)
    return prefixes[prefix], key[len(prefix) :]


def _replace_first(rest: str, parts: dict[str, str]) -> str:
    """Rename the leading module name of `rest` (e.g. 'norm1.weight') using `parts`."""
    for old, new in parts.items():
        if rest.startswith(old + "."):
            return new + rest[len(old) :]
    return rest


# ---- UNet ------------------------------------------------------------------------------------


def unet_prefixes(config: dict) -> dict[str, str]:
    """Map diffusers UNet2DConditionModel module prefixes to the LDM `input/middle/output_blocks` ones.

    LDM numbers the down path's layers consecutively (`input_blocks.0` is conv_in, then `layers` resnet
    (+ attention) layers and one downsampler per block), and the up path's likewise (`layers + 1` per block,
    the upsampler sitting after the last layer's resnet and attention).
    """
    layers = config["layers_per_block"]
    num_blocks = len(config["block_out_channels"])
    prefixes = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
        "mid_block.resnets.0.": "middle_block.0.",
        "mid_block.attentions.0.": "middle_block.1.",
        "mid_block.resnets.1.": "middle_block.2.",
    }
    if config.get("addition_embed_type") == "text_time":  # SDXL's text-and-time embedding: LDM's `label_emb`
        prefixes["add_embedding.linear_1."] = "label_emb.0.0."
        prefixes["add_embedding.linear_2."] = "label_emb.0.2."
    for i in range(num_blocks):
        for j in range(layers):
            index = 1 + i * (layers + 1) + j
            prefixes[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{index}.0."
            prefixes[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{index}.1."
        prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(i + 1) * (layers + 1)}.0.op."
        for j in range(layers + 1):
            index = i * (layers + 1) + j
            prefixes[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{index}.0."
            prefixes[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{index}.1."
        has_attention = "CrossAttn" in config["up_block_types"][i]
        last = i * (layers + 1) + layers
        prefixes[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{last}.{2 if has_attention else 1}."
    return prefixes


def convert_unet(weights: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    prefixes = unet_prefixes(config)
    converted = {}
    for key, tensor in weights.items():
        ldm_prefix, rest = _rename(key, prefixes)
        if ".resnets." in key:
            rest = _replace_first(rest, UNET_RESNET_PARTS)
        converted[UNET_PREFIX + ldm_prefix + rest] = tensor
    return converted


# ---- VAE -------------------------------------------------------------------------------------


def vae_prefixes(config: dict) -> dict[str, str]:
    """Map diffusers AutoencoderKL module prefixes to LDM ones (the decoder's `up` is numbered in reverse)."""
    num_blocks = len(config["block_out_channels"])
    prefixes = {name: name for name in ("quant_conv.", "post_quant_conv.")}
    for part in ("encoder", "decoder"):
        prefixes[f"{part}.conv_in."] = f"{part}.conv_in."
        prefixes[f"{part}.conv_out."] = f"{part}.conv_out."
        prefixes[f"{part}.conv_norm_out."] = f"{part}.norm_out."
        prefixes[f"{part}.mid_block.attentions.0."] = f"{part}.mid.attn_1."
        for k in range(2):
            prefixes[f"{part}.mid_block.resnets.{k}."] = f"{part}.mid.block_{k + 1}."
    for i in range(num_blocks):
        up = num_blocks - 1 - i
        prefixes[f"encoder.down_blocks.{i}.resnets."] = f"encoder.down.{i}.block."
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
        prefixes[f"decoder.up_blocks.{i}.resnets."] = f"decoder.up.{up}.block."
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{up}.upsample."
    return prefixes


def convert_vae(weights: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    prefixes = vae_prefixes(config)
    converted = {}
    for key, tensor in weights.items():
        ldm_prefix, rest = _rename(key, prefixes)
        if ".mid_block.attentions." in key:
            rest = _replace_first(rest, VAE_ATTENTION_PARTS)
            if tensor.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                tensor = tensor[:, :, None, None]
        elif "resnets." in key:
            rest = rest.replace("conv_shortcut.", "nin_shortcut.")
        converted[VAE_PREFIX + ldm_prefix + rest] = tensor
    return converted


# ---- CLIP text encoder -----------------------------------------------------------------------


def convert_clip(weights: dict[str, torch.Tensor], prefix: str = CLIP_PREFIX) -> dict[str, torch.Tensor]:
    """HF CLIPTextModel keys, with or without transformers' older `text_model.` level, under SD 1.x's prefix
    (or `prefix`, which ends in `text_model.`)."""
    return {prefix + key.removeprefix("text_model."): tensor for key, tensor in weights.items()}
