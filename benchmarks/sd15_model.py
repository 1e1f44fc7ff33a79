"""A random-weight model with Stable Diffusion 1.5's real architecture, written as a diffusers folder.

Timing does not depend on the weights, so this costs what the real checkpoint costs without a
download. UNTRAINED: for benchmarks only.
"""

from __future__ import annotations

from pathlib import Path

import torch


def sd_vae(sample_size: int, scaling_factor: float):
    """Stable Diffusion's VAE (84M parameters, downsampling 8x), which SDXL keeps with its own scaling factor."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=sample_size,
        scaling_factor=scaling_factor,  # force_upcast keeps diffusers' default, True, as both real configs have it
    )


def write_sd15_architecture(folder: Path, unet_in_channels: int = 9) -> Path:
    """SD 1.5's UNet (860M parameters), VAE and CLIP ViT-L/14 text encoder, random weights, SD 1.x's scheduler."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from inpaintkit.tiny import save_untrained_model, write_byte_level_clip_tokenizer

    if (folder / "model_index.json").is_file():
        return folder
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=unet_in_channels, cross_attention_dim=768
    )  # defaults = SD 1.x
    vae = sd_vae(sample_size=512, scaling_factor=0.18215)
    vocab_size = write_byte_level_clip_tokenizer(folder / "tokenizer")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    )
    return save_untrained_model(folder, unet, vae, text_encoder)
