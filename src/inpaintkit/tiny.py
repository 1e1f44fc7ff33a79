"""Write a small random-weight Stable Diffusion model as a standard diffusers folder.

The weights are UNTRAINED: the model exists so that the loading code, the engine and the
front ends can be exercised offline. Its outputs are noise.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

import torch

from .quiet import quiet_libraries

UNTRAINED_NOTE = (
    "UNTRAINED random weights written by `inpaintkit make-tiny-model`: for offline tests only, outputs are noise."
)
UNTRAINED_MARKER = "_inpaintkit_untrained"


def _bytes_to_unicode() -> list[str]:
    """CLIP's (and GPT-2's) reversible map from the 256 byte values to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes, extra = [], 0
    for byte in range(256):
        if byte in printable:
            codes.append(byte)
        else:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def write_byte_level_clip_tokenizer(folder: Path) -> int:
    """Write a CLIP tokenizer whose vocabulary is the 256 bytes (plus end-of-word forms) and no merges.

    Returns the vocabulary size.
    """
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    specials = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")
    return len(vocab)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Random weights from `seed`, leaving the caller's global random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _tiny_vae(scaling_factor: float, **family_config):
    """SD's 4-block VAE (downsampling 8x), at 8-16 channels; `family_config` adds a family's own (FLUX's and SD 3's
    16 latent channels, shift factor, no quant convs)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        scaling_factor=scaling_factor,  # force_upcast: diffusers' default, True, as SD's and SDXL's configs have it
        **{"latent_channels": 4, **family_config},
    )


def _tiny_text_config(vocab_size: int, hidden_size: int = 32):
    """A 2-layer CLIP text tower for a byte-level tokenizer of `vocab_size` tokens, projecting to 32."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


@quiet_libraries()
def make_tiny_model(
    folder: str | Path,
    *,
    unet_in_channels: int = 9,
    prediction_type: str = "epsilon",
    seed: int = 0,
    time_cond_proj_dim: int | None = None,
) -> Path:
    """Write a tiny SD-1.x-shaped model (VAE downsampling 8x, native size 64 px) to `folder`. `time_cond_proj_dim`:
    a guidance-distilled (LCM-style) UNet, which takes the guidance scale as an embedding of that size."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    if unet_in_channels not in (4, 9):
        raise ValueError(f"unet_in_channels must be 4 or 9, not {unet_in_channels}")
    folder = Path(folder)
    with _seeded(seed):
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=unet_in_channels,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=32,
            time_cond_proj_dim=time_cond_proj_dim,
        )
        vae = _tiny_vae(scaling_factor=0.18215)
        text_encoder = CLIPTextModel(_tiny_text_config(write_byte_level_clip_tokenizer(folder / "tokenizer")))
    return save_untrained_model(folder, unet, vae, text_encoder, prediction_type)


@quiet_libraries()
def save_untrained_model(folder: Path, unet, vae, text_encoder, prediction_type: str = "epsilon") -> Path:
    """Save random-weight components as a diffusers folder with SD 1.x's scheduler, labelled untrained.

    The tokenizer must already be in folder/tokenizer (write_byte_level_clip_tokenizer).
    """
    from diffusers import PNDMScheduler, StableDiffusionInpaintPipeline
    from transformers import CLIPTokenizer

    # The scheduler config of Stable Diffusion 1.x (PNDM, scaled-linear betas).
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
        prediction_type=prediction_type,
    )
    pipeline = StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    _match_sd15_scheduler_config(folder)
    _label_untrained(folder)
    return folder


@quiet_libraries()
def make_tiny_sdxl_model(
    folder: str | Path, *, unet_in_channels: int = 9, prediction_type: str = "epsilon", seed: int = 0
) -> Path:
    """Write a tiny SDXL-shaped model (two CLIP text encoders, the second with a projection; a UNet with SDXL's
    text-and-time added embedding; VAE downsampling 8x; native size 64 px) with SDXL's Euler scheduler config.

    The shapes follow diffusers' own SDXL inpainting tests (get_dummy_components), with SD's 8x VAE.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if unet_in_channels not in (4, 9):
        raise ValueError(f"unet_in_channels must be 4 or 9, not {unet_in_channels}")
    folder = Path(folder)
    with _seeded(seed):
        # The two encoders have different widths, as in SDXL (768 and 1280): a single-file loader tells them apart
        # by width, and code that mixed them up would fail here.
        vocab_size = write_byte_level_clip_tokenizer(folder / "tokenizer")
        write_byte_level_clip_tokenizer(folder / "tokenizer_2")
        text_encoder = CLIPTextModel(_tiny_text_config(vocab_size, hidden_size=32))
        text_encoder_2 = CLIPTextModelWithProjection(_tiny_text_config(vocab_size, hidden_size=48))
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=unet_in_channels,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 32,  # six time ids of 8 + the pooled text projection
            cross_attention_dim=32 + 48,  # the two encoders' hidden states side by side
        )
        vae = _tiny_vae(scaling_factor=0.13025)
    save_untrained_sdxl_model(folder, unet, vae, text_encoder, text_encoder_2, prediction_type)
    return folder


@quiet_libraries()
def save_untrained_sdxl_model(
    folder: Path, unet, vae, text_encoder, text_encoder_2, prediction_type: str = "epsilon"
) -> Path:
    """Save random-weight SDXL components as a diffusers folder with SDXL 1.0's scheduler and pipeline options,
    labelled untrained. Both tokenizers must already be in folder/tokenizer and folder/tokenizer_2."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline
    from transformers import CLIPTokenizer

    # SDXL 1.0's scheduler config (Euler, scaled-linear betas, leading spacing, offset 1).
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
        interpolation_type="linear",
        prediction_type=prediction_type,
    )
    pipeline = StableDiffusionXLInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2"),
        unet=unet,
        scheduler=scheduler,
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    _label_untrained(folder)
    return folder


def _match_sd15_scheduler_config(folder: Path) -> None:
    """SD 1.x ships its PNDM config with clip_sample false; schedulers built from it (DDIM) read that."""
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["clip_sample"] = False
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def _label_untrained(folder: Path) -> None:
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    index[UNTRAINED_MARKER] = UNTRAINED_NOTE
    index_path.write_text(json.dumps(index, indent=2), encoding="utf-8")
    (folder / "README.md").write_text(f"# Tiny inpainting model\n\n{UNTRAINED_NOTE}\n", encoding="utf-8")


def is_untrained(folder: str | Path) -> bool:
    """True when `folder` was written by make_tiny_model."""
    index_path = Path(folder) / "model_index.json"
    try:
        return UNTRAINED_MARKER in json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


@quiet_libraries()
def make_tiny_clip_model(folder: str | Path, seed: int = 0) -> Path:
    """Write a small UNTRAINED CLIP model + processor (about 300 KB) for offline tests of the CLIP and KID metrics."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = Path(folder)
    torch.manual_seed(seed)
    vocab_size = write_byte_level_clip_tokenizer(folder)
    tower = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)
    config = CLIPConfig(
        text_config=dict(
            tower,
            vocab_size=vocab_size,
            max_position_embeddings=77,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
        ),
        vision_config=dict(tower, image_size=32, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    (folder / "README.md").write_text(f"# Tiny CLIP\n\n{UNTRAINED_NOTE}\n", encoding="utf-8")
    return folder


LORA_LAYOUTS = ("diffusers", "kohya")


def make_tiny_lora(
    model_folder: str | Path,
    path: str | Path,
    *,
    layout: str = "diffusers",
    rank: int = 4,
    seed: int = 0,
    scale: float = 0.5,
) -> Path:
    """Write a random LoRA for a model folder's UNet (its attention projections), with peft, as one .safetensors file
    in diffusers' key layout (`unet.<module>.lora_A.weight`) or Kohya's / AUTOMATIC1111's (`lora_unet_<module_with_
    underscores>.lora_down.weight`, `.alpha`). `scale` is the B matrices' standard deviation: large enough to move a
    tiny model's pixels."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save_file

    if layout not in LORA_LAYOUTS:
        raise ValueError(f"layout must be one of {LORA_LAYOUTS}, not {layout}")
    with quiet_libraries(), _seeded(seed):
        unet = UNet2DConditionModel.from_pretrained(Path(model_folder) / "unet")
        targets = ["to_q", "to_k", "to_v", "to_out.0"]
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets))
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=scale)
        state = get_peft_model_state_dict(unet)
    if layout == "diffusers":
        tensors = {f"unet.{key}": value.contiguous() for key, value in state.items()}
    else:
        tensors = {}
        for key, value in state.items():
            module, _, kind = key.rpartition(".lora_")  # "down_blocks.0...to_q", "A.weight"
            prefix = "lora_unet_" + module.replace(".", "_")
            tensors[f"{prefix}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = value.contiguous()
            tensors[f"{prefix}.alpha"] = torch.tensor(float(rank))
    path = Path(path)
    save_file(tensors, str(path))
    return path
