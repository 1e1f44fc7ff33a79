"""A random-weight model with Stable Diffusion XL 1.0's real architecture, written as a diffusers folder.

Timing does not depend on the weights, so this costs what the real checkpoint costs without a
download. UNTRAINED: for benchmarks only. The weights are stored in bf16 (a 6.3 GB folder rather
than 12.6 GB, and half the memory while writing it); loading at fp32 upcasts them, which changes
nothing a benchmark measures. The byte-level tokenizers have 514 tokens rather than CLIP's 49408,
so the text encoders' token-embedding tables are smaller (100M parameters fewer); their cost
per token is unchanged (a table lookup).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from sd15_model import sd_vae


def write_sdxl_architecture(folder: Path, unet_in_channels: int = 9) -> Path:
    """SDXL 1.0's UNet (2.6B parameters), VAE, CLIP ViT-L/14 and OpenCLIP bigG text encoders, random weights,
    SDXL's Euler scheduler config."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from inpaintkit.tiny import save_untrained_sdxl_model, write_byte_level_clip_tokenizer

    if (folder / "model_index.json").is_file():
        return folder
    partial = folder.with_name(folder.name + ".partial")  # renamed to `folder` once complete
    shutil.rmtree(partial, ignore_errors=True)
    vocab_size = write_byte_level_clip_tokenizer(partial / "tokenizer")
    write_byte_level_clip_tokenizer(partial / "tokenizer_2")
    tokens = dict(
        vocab_size=vocab_size,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    torch.manual_seed(0)
    try:
        # stabilityai/stable-diffusion-xl-base-1.0's unet/config.json, in_channels aside.
        unet = UNet2DConditionModel(
            sample_size=128,
            in_channels=unet_in_channels,
            out_channels=4,
            block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            layers_per_block=2,
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            use_linear_projection=True,
            cross_attention_dim=2048,  # 768 + 1280: the two encoders' hidden states side by side
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,  # six time ids of 256 + the pooled 1280
        )
        vae = sd_vae(sample_size=1024, scaling_factor=0.13025)
        text_encoder = CLIPTextModel(  # CLIP ViT-L/14's text tower
            CLIPTextConfig(
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                projection_dim=768,
                hidden_act="quick_gelu",
                **tokens,
            )
        )
        text_encoder_2 = CLIPTextModelWithProjection(  # OpenCLIP ViT-bigG/14's text tower
            CLIPTextConfig(
                hidden_size=1280,
                intermediate_size=5120,
                num_hidden_layers=32,
                num_attention_heads=20,
                projection_dim=1280,
                hidden_act="gelu",
                **tokens,
            )
        )
    finally:
        torch.set_default_dtype(default_dtype)
    save_untrained_sdxl_model(partial, unet, vae, text_encoder, text_encoder_2)  # labelled untrained, as tiny ones
    partial.rename(folder)
    return folder
