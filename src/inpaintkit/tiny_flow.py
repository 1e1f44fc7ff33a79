"""Tiny random-weight flow-matching models (Flux.1, Flux.1 Fill, Stable Diffusion 3) as standard diffusers folders,
for offline tests of the loading code, the engine and the front ends. Their outputs are noise (tiny.py says why).

The shapes follow diffusers' own pipeline tests (get_dummy_components), with the real models' 8x VAE, 16 latent
channels, VAE shift and scale, and scheduler configs, so the latent arithmetic is the real one.
"""

from __future__ import annotations

import string
from pathlib import Path

from .quiet import quiet_libraries
from .tiny import _label_untrained, _seeded, _tiny_text_config, _tiny_vae, write_byte_level_clip_tokenizer

FLUX_VAE = {"shift_factor": 0.1159, "scaling_factor": 0.3611}  # FLUX.1's VAE config
SD3_VAE = {"shift_factor": 0.0609, "scaling_factor": 1.5305}  # SD 3's


def write_t5_tokenizer(folder: Path) -> int:
    """Write a T5 tokenizer (SentencePiece-style Unigram with a metaspace, </s> after the text) whose vocabulary is
    printable ASCII characters; returns its size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    characters = list(string.ascii_letters + string.digits + string.punctuation)
    vocabulary = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    vocabulary += [(c, -2.0) for c in characters] + [("▁" + c, -1.5) for c in characters]
    tokenizer = Tokenizer(models.Unigram(vocabulary, unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    fast = T5TokenizerFast(
        tokenizer_object=tokenizer, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0,
        model_max_length=512,
    )  # fmt: skip
    fast.save_pretrained(folder)
    return len(vocabulary)


def _tiny_t5(vocab_size: int, width: int = 32):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(vocab_size=vocab_size, d_model=width, d_kv=8, d_ff=37, num_layers=2, num_heads=4, pad_token_id=0)
    )


def _tiny_flow_vae(shift_and_scale: dict[str, float]):
    """The tiny 8x VAE with 16 latent channels and no quant convs, as Flux's and SD 3's."""
    return _tiny_vae(
        shift_and_scale["scaling_factor"],
        latent_channels=16,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=shift_and_scale["shift_factor"],
    )


@quiet_libraries()
def make_tiny_flux(folder: str | Path, *, fill: bool = False, guidance_embeds: bool = True, seed: int = 0) -> Path:
    """Write a tiny Flux.1 model (`fill`: a Flux.1 Fill one, whose transformer also takes the masked image's latents
    and the 8x8 mask) with FLUX.1 dev's scheduler config. `guidance_embeds` False makes a schnell-like model."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxInpaintPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5TokenizerFast

    folder = Path(folder)
    latent_channels, vae_factor = 16, 8
    per_cell = 2 * latent_channels + vae_factor * vae_factor if fill else latent_channels
    with _seeded(seed):
        clip_vocab = write_byte_level_clip_tokenizer(folder / "tokenizer")
        t5_vocab = write_t5_tokenizer(folder / "tokenizer_2")
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=per_cell * 4,  # 2x2 latent cells per token
            out_channels=latent_channels * 4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=guidance_embeds,
            axes_dims_rope=(4, 6, 6),
        )
        parts = dict(
            transformer=transformer,
            vae=_tiny_flow_vae(FLUX_VAE),
            text_encoder=CLIPTextModel(_tiny_text_config(clip_vocab)),
            text_encoder_2=_tiny_t5(t5_vocab),
            tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
            tokenizer_2=T5TokenizerFast.from_pretrained(folder / "tokenizer_2"),
            scheduler=FlowMatchEulerDiscreteScheduler(
                base_image_seq_len=256,
                base_shift=0.5,
                max_image_seq_len=4096,
                max_shift=1.15,
                shift=3.0,
                use_dynamic_shifting=True,
            ),  # fmt: skip
        )
    pipeline = FluxFillPipeline(**parts) if fill else FluxInpaintPipeline(**parts)
    pipeline.save_pretrained(folder, safe_serialization=True)
    _label_untrained(folder)
    return folder


@quiet_libraries()
def make_tiny_sd3(folder: str | Path, *, inpainting: bool = False, seed: int = 0) -> Path:
    """Write a tiny Stable Diffusion 3 model (CLIP-L, CLIP-G with projections, T5; an MMDiT of 16 or, `inpainting`,
    33 input channels) with SD 3.5's scheduler config; native size 64 px."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3InpaintPipeline
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5TokenizerFast

    folder = Path(folder)
    with _seeded(seed):
        clip_vocab = write_byte_level_clip_tokenizer(folder / "tokenizer")
        write_byte_level_clip_tokenizer(folder / "tokenizer_2")
        t5_vocab = write_t5_tokenizer(folder / "tokenizer_3")
        transformer = SD3Transformer2DModel(
            sample_size=8,
            patch_size=2,
            in_channels=33 if inpainting else 16,
            out_channels=16,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=48,  # T5's width; the CLIP states (16 + 16 wide) are padded to it
            pooled_projection_dim=32,  # both CLIPs' pooled projections side by side
        )
        clip_config = _tiny_text_config(clip_vocab, hidden_size=16)
        clip_config.projection_dim = 16
        pipeline = StableDiffusion3InpaintPipeline(
            transformer=transformer,
            vae=_tiny_flow_vae(SD3_VAE),
            text_encoder=CLIPTextModelWithProjection(clip_config),
            text_encoder_2=CLIPTextModelWithProjection(clip_config),
            text_encoder_3=_tiny_t5(t5_vocab, width=48),
            tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
            tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2"),
            tokenizer_3=T5TokenizerFast.from_pretrained(folder / "tokenizer_3"),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),  # SD 3.5's config
        )
    pipeline.save_pretrained(folder, safe_serialization=True)
    _label_untrained(folder)
    return folder
