"""--transformer: another copy of a model's transformer in place of its own, usually a quantized one that fits a
smaller GPU. The text encoders, the VAE, the scheduler and the transformer's config still come from --model; only the
transformer's weights come from here:

- a GGUF file (.gguf), through diffusers' GGUF support: the weights stay quantized (Q8_0, Q4_K, ...) in memory and
  each layer dequantizes its own for its call, in the model's dtype;
- a diffusers transformer folder (config.json and weights): a fine-tune, or one saved quantized with bitsandbytes
  (NF4 or int8), which diffusers runs only on a GPU and only with the bitsandbytes package;
- a .safetensors file of the transformer alone.

What can be told from the file (which architecture it holds, how many input channels it takes) is checked before any
weights are read, so a wrong file is one sentence rather than a failure deep inside the loader.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

from .errors import InputError, first_line

if TYPE_CHECKING:
    from .acceleration import Acceleration
    from .families import Family

# The diffusers class of each transformer family's denoiser.
TRANSFORMER_CLASSES = {
    "flux": "FluxTransformer2DModel",
    "flux-fill": "FluxTransformer2DModel",
    "sd3": "SD3Transformer2DModel",
}
FAMILY_ARCHITECTURES = {"flux": "flux", "flux-fill": "flux", "sd3": "sd3"}
# Which network a file holds, from its tensor names in the original layouts (what GGUF files on the hub use) and in
# diffusers' (what the tests write), checked in order.
ARCHITECTURES = (
    ("double_blocks.", "flux"),
    ("single_transformer_blocks.", "flux"),
    ("joint_blocks.", "sd3"),
    ("pos_embed.proj.", "sd3"),
    ("input_blocks.", "unet"),
    ("down_blocks.", "unet"),
)
ARCHITECTURE_NAMES = {
    "flux": "a Flux.1 transformer",
    "sd3": "a Stable Diffusion 3 transformer",
    "unet": "a UNet (Stable Diffusion 1.x/2.x/XL)",
}
# The input projection, whose second dimension is the channels the transformer takes per token (Flux) or per latent
# cell (SD 3), in each layout.
INPUT_PROJECTIONS = ("img_in.weight", "x_embedder.weight", "x_embedder.proj.weight", "pos_embed.proj.weight")
ORIGINAL_PREFIX = "model.diffusion_model."
FILE_SUFFIXES = (".gguf", ".safetensors")


@dataclass(frozen=True)
class TransformerSource:
    """A --transformer that passed the checks that need no weights."""

    path: Path
    kind: str  # "gguf", "safetensors", "folder" or "bitsandbytes" (a folder saved quantized with it)

    @property
    def quantized(self) -> bool:
        return self.kind in ("gguf", "bitsandbytes")

    def loader(self, dtype: torch.dtype) -> Callable[[Family, str], Any]:
        """What models.load_components calls, once the family is known, for the denoiser it passes the pipeline."""
        return lambda family, model: load_transformer(self, family, model, dtype)


def transformer_source(value: str | Path, device: torch.device) -> TransformerSource:
    """--transformer checked before the slow load: what it is, and that this machine can load it."""
    path = Path(value).expanduser()
    if path.is_dir():
        if folder_config(path) is None:
            raise InputError(
                f"--transformer {value} is a folder without a config.json (nor transformer/config.json); give a "
                "diffusers transformer folder, a .gguf file or a .safetensors file."
            )
        if quantization_method(path) == "bitsandbytes":
            check_bitsandbytes(value, device)
            return TransformerSource(path, "bitsandbytes")
        return TransformerSource(path, "folder")
    if not path.is_file():
        raise InputError(f"--transformer {value} is neither a file nor a folder.")
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise InputError(
            f"--transformer {value} is neither a .gguf nor a .safetensors file; give one of those or a diffusers "
            "transformer folder."
        )
    if suffix == ".gguf" and not installed("gguf"):
        raise InputError(f"--transformer {value} is a GGUF file, which needs the gguf package: pip install gguf.")
    return TransformerSource(path, suffix.removeprefix("."))


def check_with_acceleration(source: TransformerSource, acceleration: Acceleration) -> None:
    """Options that work on full-precision weights cannot take an already quantized transformer."""
    if source.quantized and acceleration.fp8_weights:
        raise InputError(
            f"--fp8-weights stores a full-precision transformer in fp8, but --transformer {source.path} is already "
            "quantized; give one of the two."
        )
    if source.quantized and acceleration.fuse_qkv:
        raise InputError(
            f"--fuse-qkv concatenates full-precision weights and cannot merge the quantized ones of --transformer "
            f"{source.path}; leave it out."
        )


def check_bitsandbytes(value: str | Path, device: torch.device) -> None:
    """diffusers' bitsandbytes quantizer refuses to load without a GPU (validate_environment), and needs the package."""
    if device.type != "cuda":
        raise InputError(
            f"--transformer {value} is quantized with bitsandbytes (NF4 or int8), which diffusers runs only on a "
            "GPU; use --device cuda, or a GGUF file of the transformer on this machine."
        )
    if not installed("bitsandbytes"):
        raise InputError(
            f"--transformer {value} is quantized with bitsandbytes (NF4 or int8), which is not installed here: "
            "pip install bitsandbytes."
        )


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def folder_config(path: Path) -> Optional[Path]:
    """The transformer's config.json in a transformer folder, or in a whole model folder's transformer/."""
    for candidate in (path / "config.json", path / "transformer" / "config.json"):
        if candidate.is_file():
            return candidate
    return None


def quantization_method(path: Path) -> Optional[str]:
    """The `quant_method` of a folder saved quantized (its config.json's quantization_config), else None."""
    config_path = folder_config(path)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path is not None else {}
    except (OSError, ValueError) as error:
        raise InputError(f"--transformer {path} has an unreadable config.json ({first_line(error)}).") from None
    quantization = config.get("quantization_config") or {}
    return quantization.get("quant_method") if isinstance(quantization, dict) else None


def load_transformer(source: TransformerSource, family: Family, model: str, dtype: torch.dtype) -> Any:
    """The transformer of `source`, built from `model`'s transformer config and checked to fit it."""
    import diffusers

    if family.name not in TRANSFORMER_CLASSES:
        raise InputError(
            f"--transformer replaces a transformer, and {model} is a {family.name} model, whose denoiser is a "
            f"{family.denoiser}; leave --transformer out."
        )
    cls = getattr(diffusers, TRANSFORMER_CLASSES[family.name])
    wanted = load_transformer_config(cls, model)
    if source.kind in ("folder", "bitsandbytes"):
        check_folder_class(source.path, family, TRANSFORMER_CLASSES[family.name])
    if source.kind in ("gguf", "safetensors"):
        shapes = file_shapes(source.path)
        check_file_fits(source.path, family, shapes, int(wanted["in_channels"]))
        check_tensors(source.path, family, shapes, expected_shapes(cls, wanted))
    try:
        transformer = _load(cls, source, model, dtype)
    except InputError:
        raise
    except Exception as error:  # diffusers raises KeyError, ValueError, RuntimeError... on a file that does not fit
        raise InputError(
            f"Could not load --transformer {source.path} as the transformer of this {family.name} model: "
            f"{first_line(error)}."
        ) from None
    given = int(transformer.config.in_channels)
    if given != int(wanted["in_channels"]):  # a folder brings its own config: it may be another variant's
        raise channels_mismatch(source.path, family, given, int(wanted["in_channels"]))
    return transformer


def check_folder_class(path: Path, family: Family, wanted: str) -> None:
    """A folder's config names the class it holds: diffusers would build the transformer from another's config."""
    config_path = folder_config(path)
    held = json.loads(config_path.read_text(encoding="utf-8")).get("_class_name") if config_path else None
    if held is not None and held != wanted:
        raise InputError(
            f"--transformer {path} holds a {held}, but this {family.name} model's transformer is a {wanted}; give a "
            "folder of that class."
        )


def load_transformer_config(cls: Any, model: str) -> dict[str, Any]:
    try:
        return dict(cls.load_config(model, subfolder="transformer"))
    except Exception as error:  # an uncached hub model offline, a folder without transformer/config.json
        raise InputError(
            f"Could not read the transformer config of {model}, which --transformer needs: {first_line(error)}."
        ) from None


def _load(cls: Any, source: TransformerSource, model: str, dtype: torch.dtype) -> Any:
    if source.kind == "gguf":
        from diffusers import GGUFQuantizationConfig

        quantization = GGUFQuantizationConfig(compute_dtype=dtype)
        return cls.from_single_file(
            str(source.path), config=model, subfolder="transformer", quantization_config=quantization, torch_dtype=dtype
        )
    if source.kind == "safetensors":
        return cls.from_single_file(str(source.path), config=model, subfolder="transformer", torch_dtype=dtype)
    subfolder = None if (source.path / "config.json").is_file() else "transformer"
    return cls.from_pretrained(str(source.path), subfolder=subfolder, torch_dtype=dtype)


def file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's name (without the original checkpoints' prefix) and its logical shape, read from the file's
    header (GGUF: ggml lists dimensions innermost first, so they are reversed, as diffusers' GGUF loader does)."""
    try:
        if path.suffix.lower() == ".gguf":
            from gguf import GGUFReader

            reader = GGUFReader(path)
            tensors = {tensor.name: tuple(int(v) for v in reversed(tensor.shape)) for tensor in reader.tensors}
        else:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                tensors = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as error:  # not a GGUF or safetensors file at all: a bad magic number, a truncated header
        raise InputError(f"--transformer {path} is not a readable {path.suffix} file ({first_line(error)}).") from None
    return {name.removeprefix(ORIGINAL_PREFIX): shape for name, shape in tensors.items()}


def architecture(names: list[str]) -> Optional[str]:
    for prefix, name in ARCHITECTURES:
        if any(key.startswith(prefix) for key in names):
            return name
    return None


def check_file_fits(path: Path, family: Family, shapes: dict[str, tuple[int, ...]], in_channels: int) -> None:
    """The file holds this family's transformer, taking the model's input channels (Flux.1 Fill's transformer takes
    the masked image and the mask too: a Fill model needs a Fill file)."""
    held = architecture(list(shapes))
    wanted = FAMILY_ARCHITECTURES[family.name]
    if held != wanted:
        what = ARCHITECTURE_NAMES.get(held, "no network inpaintkit knows")
        raise InputError(
            f"--transformer {path} holds {what}, but this is a {family.name} model, whose transformer is "
            f"{ARCHITECTURE_NAMES[wanted]}; give a file of that architecture."
        )
    for name in INPUT_PROJECTIONS:
        if name in shapes and len(shapes[name]) >= 2 and shapes[name][1] != in_channels:
            raise channels_mismatch(path, family, shapes[name][1], in_channels)


def expected_shapes(cls: Any, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The transformer's tensors and shapes for this config, from a model built without memory (meta tensors)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        empty = cls.from_config(config)
    return {name: tuple(tensor.shape) for name, tensor in empty.state_dict().items()}


def check_tensors(
    path: Path, family: Family, shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]
) -> None:
    """A file in diffusers' layout has exactly the transformer's tensors, in their shapes (another variant, such as a
    Flux.1 schnell file for a dev model, lacks or adds some). A file in the original layout is converted by diffusers,
    which says what does not fit."""
    if not set(shapes) & set(expected):
        return  # the original layout
    missing, extra = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    reshaped = [name for name in sorted(set(shapes) & set(expected)) if shapes[name] != expected[name]]
    if missing:
        raise other_variant(path, family, f"lacks {len(missing)} of the tensors of", missing[0])
    if extra:
        raise other_variant(path, family, f"has {len(extra)} tensors more than", extra[0])
    if reshaped:
        name = reshaped[0]
        raise InputError(
            f"--transformer {path} has {len(reshaped)} tensors of other shapes than this {family.name} model's "
            f"transformer (such as {name}: {list(shapes[name])} against {list(expected[name])}); give the file made "
            "for this model."
        )


def other_variant(path: Path, family: Family, difference: str, example: str) -> InputError:
    return InputError(
        f"--transformer {path} {difference} this {family.name} model's transformer (such as {example}), so it is "
        "another variant of the architecture; give the file made for this model."
    )


def channels_mismatch(path: Path, family: Family, given: int, wanted: int) -> InputError:
    return InputError(
        f"--transformer {path} takes {given} input channels but this {family.name} model's transformer takes "
        f"{wanted} (an inpainting model such as Flux.1 Fill needs its own transformer, an ordinary model an ordinary "
        "one); give the file made for this model."
    )
