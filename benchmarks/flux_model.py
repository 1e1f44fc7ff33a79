"""A random-weight FLUX.1 Fill model at full width and reduced depth, written as a diffusers folder.

UNTRAINED: for benchmarks only. What is real and what is reduced:
- The transformer has FLUX.1 Fill's width and every per-block shape: hidden size 3072 (24 heads x 128),
  joint_attention_dim 4096 (T5-XXL's width), pooled_projection_dim 768 (CLIP-L's), in_channels 384 (per 2x2
  token: 16 latent + 16 masked-image latent + 64 mask channels, x4), out_channels 64, guidance_embeds True,
  axes_dims_rope (16, 56, 56). Only its depth is reduced: `double` MMDiT blocks and `single` single-stream blocks
  rather than 19 and 38 (default 1 and 2, the real model's 1:2 proportion). Every block of a kind has the same
  shapes and runs on the same tokens, so the transformer's time per step is (embedders and output layer) +
  double x (one double block) + single x (one single block), linear in the depth.
- The VAE is FLUX.1's (SD's 84M-parameter 8x VAE with 16 latent channels, no quant convs, FLUX.1's shift and
  scale).
- The text encoders are reduced: a 1-layer CLIP text tower at CLIP-L's width (768, so the pooled vector has the
  real size) and a 1-layer T5 encoder at T5-XXL's output width (4096) but with 2 heads of 64 and a 256-wide
  feed-forward, rather than CLIP ViT-L/14 (12 layers, 123M parameters) and T5-v1.1-XXL (24 layers, 4.7B
  parameters). Both pipelines still tokenise to the real lengths (77 CLIP tokens, 512 T5 tokens), so the
  transformer sees FLUX's real text sequence. The text encoders run once per job, not per step.
- The tokenizers are byte-level (CLIP) and character-level (T5) vocabularies made offline, so the embedding tables
  are smaller than the real ones (a table lookup: no per-token cost difference).
The weights are stored in bf16, as black-forest-labs/FLUX.1-Fill-dev ships them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from inpaintkit.quiet import quiet_libraries

FLUX_VAE = {"shift_factor": 0.1159, "scaling_factor": 0.3611}  # FLUX.1's vae/config.json


@quiet_libraries()
def write_flux_fill_architecture(folder: Path, double: int = 1, single: int = 2) -> Path:
    """FLUX.1 Fill's transformer at full width with `double` + `single` blocks, FLUX.1's VAE, reduced CLIP and T5
    text encoders, FLUX.1 dev's scheduler config; random weights."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

    from inpaintkit.tiny import _label_untrained, write_byte_level_clip_tokenizer
    from inpaintkit.tiny_flow import write_t5_tokenizer

    if (folder / "model_index.json").is_file():
        return folder
    partial = folder.with_name(folder.name + ".partial")  # renamed to `folder` once complete
    shutil.rmtree(partial, ignore_errors=True)
    clip_vocab = write_byte_level_clip_tokenizer(partial / "tokenizer")
    t5_vocab = write_t5_tokenizer(partial / "tokenizer_2")
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    torch.manual_seed(0)
    try:
        # black-forest-labs/FLUX.1-Fill-dev's transformer/config.json, depth aside.
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=384,
            out_channels=64,
            num_layers=double,
            num_single_layers=single,
            attention_head_dim=128,
            num_attention_heads=24,
            joint_attention_dim=4096,
            pooled_projection_dim=768,
            guidance_embeds=True,
            axes_dims_rope=(16, 56, 56),
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=16,
            sample_size=1024,
            use_quant_conv=False,
            use_post_quant_conv=False,
            **FLUX_VAE,
        )
        text_encoder = CLIPTextModel(  # CLIP ViT-L/14's width, 1 layer of 12
            CLIPTextConfig(
                vocab_size=clip_vocab,
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=1,
                num_attention_heads=12,
                projection_dim=768,
                hidden_act="quick_gelu",
                max_position_embeddings=77,
                bos_token_id=clip_vocab - 2,
                eos_token_id=clip_vocab - 1,
                pad_token_id=clip_vocab - 1,
            )
        )
        text_encoder_2 = T5EncoderModel(  # T5-v1.1-XXL's output width, 1 narrow layer of 24
            T5Config(
                vocab_size=t5_vocab,
                d_model=4096,
                d_kv=64,
                d_ff=256,
                num_layers=1,
                num_heads=2,
                feed_forward_proj="gated-gelu",
                pad_token_id=0,
            )
        )
    finally:
        torch.set_default_dtype(default_dtype)
    scheduler = FlowMatchEulerDiscreteScheduler(  # FLUX.1 dev's scheduler config
        base_image_seq_len=256,
        base_shift=0.5,
        max_image_seq_len=4096,
        max_shift=1.15,
        shift=3.0,
        use_dynamic_shifting=True,
    )
    pipeline = FluxFillPipeline(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(partial / "tokenizer"),
        tokenizer_2=T5TokenizerFast.from_pretrained(partial / "tokenizer_2"),
        scheduler=scheduler,
    )
    pipeline.save_pretrained(partial, safe_serialization=True)
    _label_untrained(partial)
    partial.rename(folder)
    return folder
