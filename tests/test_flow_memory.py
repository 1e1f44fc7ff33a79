"""The memory options for big (flow) models, on the tiny Flux.1 Fill on CPU: layer-by-layer offload, fp8 weights and
a --transformer in place of the model's own (GGUF, a diffusers folder, bitsandbytes NF4 where it can run); and each
one's refusal in one sentence where it cannot run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inpaintkit import Inpainter, InputError
from inpaintkit.acceleration import check_fp8, offload_layers_to_cpu, stored_bytes
from inpaintkit.quantized import check_bitsandbytes

from .conftest import box_mask, gradient_image
from .helpers import assert_one_line_error, run_cli

JOB = dict(prompt="a red ball", steps=3, seed=5)
SIZE = 64
Q8_0_BYTES_PER_32 = 34  # a Q8_0 block: 32 int8 weights and one fp16 scale


def job(inpainter: Inpainter) -> tuple[np.ndarray, dict]:
    image = gradient_image(SIZE, SIZE)
    mask = box_mask(SIZE, SIZE, (SIZE // 4, SIZE // 4, 3 * SIZE // 4, 3 * SIZE // 4))
    result = inpainter(image, mask, **JOB)[0]
    return np.asarray(result), result.info["inpaintkit"]


@pytest.fixture(scope="module")
def fill32(tiny_flux_fill):
    """The unquantised reference, in fp32 so that the only rounding compared is the option's."""
    return Inpainter.from_pretrained(tiny_flux_fill, device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def fill32_images(fill32):
    return job(fill32)[0]


def transformer_inputs(transformer) -> dict:
    """One Flux.1 Fill transformer call's inputs: 16 image tokens, 7 text tokens, the guidance embedded."""
    generator = torch.Generator().manual_seed(0)
    config = transformer.config
    return dict(
        hidden_states=torch.randn(1, 16, config.in_channels, generator=generator),
        timestep=torch.tensor([0.5]),
        guidance=torch.tensor([30.0]),
        pooled_projections=torch.randn(1, config.pooled_projection_dim, generator=generator),
        encoder_hidden_states=torch.randn(1, 7, config.joint_attention_dim, generator=generator),
        txt_ids=torch.zeros(7, 3),
        img_ids=torch.zeros(16, 3),
        return_dict=False,
    )


def relative_rms_error(ours, reference) -> float:
    """The RMS of one transformer call's difference, relative to the RMS of the reference call's output."""
    with torch.no_grad():
        inputs = transformer_inputs(reference)
        expected, got = reference(**inputs)[0], ours(**inputs)[0]
    return float((got - expected).pow(2).mean().sqrt() / expected.pow(2).mean().sqrt())


# -- sequential offload ------------------------------------------------------------------------------------------


def test_layer_by_layer_offload_streams_each_layer_and_gives_the_same_pixels(tiny_flux_fill, fill32_images):
    # The option is CUDA only; the hooks themselves run with the CPU as the execution device, which checks the wiring
    # (every model offloaded, weights fetched for each layer's call and dropped after) without a GPU.
    streamed = Inpainter.from_pretrained(tiny_flux_fill, device="cpu", dtype="fp32")
    components = streamed.components
    offload_layers_to_cpu(components, execution_device=torch.device("cpu"))
    for module in (components.unet, components.vae, *components.text_modules().values()):
        assert {parameter.device.type for parameter in module.parameters()} == {"meta"}
    ours, _ = job(streamed)
    assert np.array_equal(ours, fill32_images)  # the same weights and operations: the same pixels, bit for bit
    assert {parameter.device.type for parameter in components.unet.parameters()} == {"meta"}  # none kept after


def test_sequential_offload_without_a_gpu_is_one_sentence_before_loading(tmp_path, capsys):
    code, _, err = run_cli(cli_job(tmp_path, "--device", "cpu", "--sequential-offload"), capsys)
    assert_one_line_error(code, err, "--sequential-offload moves each layer to the GPU only while it runs")


def test_both_offloads_at_once_are_one_sentence(tmp_path, capsys):
    code, _, err = run_cli(cli_job(tmp_path, "--device", "cpu", "--offload", "--sequential-offload"), capsys)
    assert_one_line_error(code, err, "give one")


# -- fp8 weights -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fill_fp8(tiny_flux_fill):
    return Inpainter.from_pretrained(tiny_flux_fill, device="cpu", dtype="fp32", fp8_weights=True)


def test_fp8_weights_take_one_byte_each(fill32, fill_fp8):
    transformer = fill_fp8.components.unet
    cast = [parameter for parameter in transformer.parameters() if parameter.dtype == torch.float8_e4m3fn]
    cast_weights = sum(parameter.numel() for parameter in cast)
    # Every attention and MLP projection of the blocks is stored in fp8; the norms stay in the model's dtype.
    for name, parameter in transformer.named_parameters():
        if name.startswith(("transformer_blocks.", "single_transformer_blocks.")) and name.endswith("to_q.weight"):
            assert parameter.dtype == torch.float8_e4m3fn, name
        if ".norm" in name:
            assert parameter.dtype == torch.float32, name
    assert cast_weights > 0.5 * sum(parameter.numel() for parameter in transformer.parameters())
    # Byte for byte: each cast weight went from fp32's 4 bytes to 1; nothing else changed.
    assert stored_bytes(transformer) == stored_bytes(fill32.components.unet) - 3 * cast_weights


def test_fp8_weights_stay_close_to_the_unquantised_model(fill32, fill_fp8, fill32_images):
    # e4m3 keeps 3 mantissa bits: each weight moves by at most 2^-4 of its size, about 3.6% RMS (uniform rounding).
    # A layer's output sums many such independent errors, so it keeps about that relative size, and the one to
    # three cast layers on each path of the tiny transformer add theirs in quadrature: under 10% for one call. Above
    # 0.5%: the weights really were rounded.
    error = relative_rms_error(fill_fp8.components.unet, fill32.components.unet)
    assert 0.005 < error < 0.10, error
    ours, parameters = job(fill_fp8)
    assert parameters["fp8_weights"] is True  # it changes pixels, so it is recorded with them
    hole = box_mask(SIZE, SIZE, (SIZE // 4, SIZE // 4, 3 * SIZE // 4, 3 * SIZE // 4)) > 0
    assert np.array_equal(ours[~hole], fill32_images[~hole])  # paste-back keeps the rest exactly
    # Over three steps the prediction's few-percent error moves painted pixels by about a level on average (measured
    # 1.1 of 255); 4 levels allows for other CPUs' rounding, while weights broken by the cast move them by tens.
    difference = np.abs(ours[hole].astype(int) - fill32_images[hole].astype(int))
    assert 0 < difference.mean() <= 4, difference.mean()


def test_fp8_and_layer_by_layer_offload_together_give_the_fp8_pixels(tiny_flux_fill, fill_fp8):
    both = Inpainter.from_pretrained(tiny_flux_fill, device="cpu", dtype="fp32", fp8_weights=True)
    offload_layers_to_cpu(both.components, execution_device=torch.device("cpu"))
    assert np.array_equal(job(both)[0], job(fill_fp8)[0])  # the CPU copy the hooks fetch is the fp8 one


def test_fp8_runs_on_this_cpu():
    # Casting to and from fp8 is a software conversion on CPUs (torch >= 2.1): the check must not refuse it here.
    check_fp8(torch.device("cpu"))


def test_fp8_with_a_torch_without_float8_is_one_sentence_before_loading(tmp_path, capsys, monkeypatch):
    # What fails on a torch older than 2.1 is the dtype itself (an AttributeError deep in the cast), so it is
    # checked before loading; the model path does not exist, so a refusal that waited for the load would differ.
    monkeypatch.delattr(torch, "float8_e4m3fn")
    code, _, err = run_cli(cli_job(tmp_path, "--device", "cpu", "--fp8-weights"), capsys)
    assert_one_line_error(code, err, "--fp8-weights needs torch's float8 dtypes (torch 2.1 or newer)")


def test_fp8_on_a_backend_that_cannot_cast_is_one_sentence(monkeypatch):
    # A backend without fp8 conversions (MPS, for one) fails on the first cast: the check tries one.
    def refuse(self, *args, **kwargs):
        raise TypeError("Trying to convert Float8_e4m3fn to the MPS backend but it does not have support for that")

    monkeypatch.setattr(torch.Tensor, "to", refuse)
    with pytest.raises(InputError, match=r"^--fp8-weights cannot run on cpu with this torch \(Trying to convert"):
        check_fp8(torch.device("cpu"))


# -- --transformer: GGUF -----------------------------------------------------------------------------------------


def write_gguf(state_dict: dict[str, torch.Tensor], path: Path, architecture: str = "flux") -> Path:
    """A GGUF file as city96's converter writes one: matrices whose rows are whole 32-weight blocks in Q8_0, the
    rest (biases, norms) in F32. Tensor names in diffusers' layout: diffusers converts the original layout with
    FLUX.1's full width (3072) fixed, so a tiny model's file must already be in its own."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch=architecture)
    for name, tensor in state_dict.items():
        array = tensor.float().numpy()
        if array.ndim == 2 and array.shape[-1] % 32 == 0:
            blocks = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, blocks, raw_shape=blocks.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def transformer_state(folder: Path, cls_name: str = "FluxTransformer2DModel") -> dict[str, torch.Tensor]:
    import diffusers

    return getattr(diffusers, cls_name).from_pretrained(folder / "transformer").state_dict()


@pytest.fixture(scope="module")
def fill_gguf(tiny_flux_fill, tmp_path_factory):
    return write_gguf(transformer_state(tiny_flux_fill), tmp_path_factory.mktemp("gguf") / "fill-Q8_0.gguf")


def test_a_gguf_transformer_loads_quantized_and_runs(tiny_flux_fill, fill_gguf, fill32, fill32_images):
    quantized = Inpainter.from_pretrained(tiny_flux_fill, device="cpu", dtype="fp32", transformer=fill_gguf)
    transformer = quantized.components.unet
    blocks = [p for p in transformer.parameters() if getattr(p, "quant_type", None) == 8]  # GGMLQuantizationType.Q8_0
    assert type(transformer.transformer_blocks[0].attn.to_q).__name__ == "GGUFLinear"
    # Byte for byte: each Q8_0 weight takes 34/32 bytes where fp32 took 4; the F32 tensors are unchanged.
    quantized_weights = sum(int(np.prod(p.quant_shape)) for p in blocks)
    expected = (
        stored_bytes(fill32.components.unet) - 4 * quantized_weights + quantized_weights * Q8_0_BYTES_PER_32 // 32
    )
    assert stored_bytes(transformer) == expected
    assert quantized_weights > 0.5 * sum(p.numel() for p in fill32.components.unet.parameters())
    # Q8_0 rounds each weight to 1/254 of its block's largest: about 0.6% RMS of a weight, so one call stays within
    # 2% of the fp32 one (and differs: the weights were quantized).
    error = relative_rms_error(transformer, fill32.components.unet)
    assert 0 < error < 0.02, error
    ours, parameters = job(quantized)
    assert parameters["transformer"] == str(fill_gguf)
    assert np.abs(ours.astype(int) - fill32_images.astype(int)).mean() <= 1  # measured 0.02 levels


def test_a_gguf_of_another_architecture_is_one_sentence(tiny_flux_fill, tiny_sd3, tmp_path, capsys):
    sd3_file = write_gguf(transformer_state(tiny_sd3, "SD3Transformer2DModel"), tmp_path / "sd3.gguf", "sd3")
    code, _, err = run_cli(cli_job(tmp_path, "--model", tiny_flux_fill, "--transformer", sd3_file), capsys)
    assert_one_line_error(code, err, "holds a Stable Diffusion 3 transformer, but this is a flux-fill model")


def test_an_ordinary_flux_gguf_for_a_fill_model_is_one_sentence(tiny_flux_fill, tiny_flux, tmp_path, capsys):
    flux_file = write_gguf(transformer_state(tiny_flux), tmp_path / "flux.gguf")
    code, _, err = run_cli(cli_job(tmp_path, "--model", tiny_flux_fill, "--transformer", flux_file), capsys)
    assert_one_line_error(code, err, "takes 64 input channels but this flux-fill model's transformer takes 384")


def test_a_gguf_of_another_variant_is_one_sentence(tiny_flux_fill, tmp_path, capsys):
    # A schnell-like file (no guidance embedder) for a guidance-distilled model.
    state = {k: v for k, v in transformer_state(tiny_flux_fill).items() if "guidance_embedder" not in k}
    code, _, err = run_cli(
        cli_job(tmp_path, "--model", tiny_flux_fill, "--transformer", write_gguf(state, tmp_path / "s.gguf")), capsys
    )
    assert_one_line_error(code, err, "lacks 4 of the tensors of this flux-fill model's transformer")


def test_a_gguf_with_other_shapes_is_one_sentence(tiny_flux_fill, tmp_path, capsys):
    state = transformer_state(tiny_flux_fill)
    state["context_embedder.weight"] = torch.zeros(32, 64)  # a wider text encoder's projection
    code, _, err = run_cli(
        cli_job(tmp_path, "--model", tiny_flux_fill, "--transformer", write_gguf(state, tmp_path / "w.gguf")), capsys
    )
    assert_one_line_error(code, err, "context_embedder.weight: [32, 64] against [32, 32]")


def test_a_file_that_is_not_gguf_is_one_sentence(tiny_flux_fill, tmp_path, capsys):
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf file at all")
    code, _, err = run_cli(
        cli_job(tmp_path, "--model", tiny_flux_fill, "--transformer", tmp_path / "broken.gguf"), capsys
    )
    assert_one_line_error(code, err, "is not a readable .gguf file")


def test_gguf_without_the_gguf_package_is_one_sentence(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("inpaintkit.quantized.installed", lambda package: package != "gguf")
    (tmp_path / "t.gguf").write_bytes(b"GGUF")
    code, _, err = run_cli(cli_job(tmp_path, "--device", "cpu", "--transformer", tmp_path / "t.gguf"), capsys)
    assert_one_line_error(code, err, "needs the gguf package: pip install gguf")


def test_fp8_weights_of_a_quantized_transformer_is_one_sentence(fill_gguf, tmp_path, capsys):
    code, _, err = run_cli(cli_job(tmp_path, "--device", "cpu", "--fp8-weights", "--transformer", fill_gguf), capsys)
    assert_one_line_error(code, err, "is already quantized; give one of the two")


def test_a_transformer_for_a_unet_model_is_one_sentence(tiny9, fill_gguf):
    with pytest.raises(InputError, match="whose denoiser is a unet; leave --transformer out"):
        Inpainter.from_pretrained(tiny9, device="cpu", transformer=fill_gguf)


# -- --transformer: folders and bitsandbytes ---------------------------------------------------------------------


def test_a_transformer_folder_replaces_the_models_own(tiny_flux_fill, fill32_images):
    replaced = Inpainter.from_pretrained(
        tiny_flux_fill, device="cpu", dtype="fp32", transformer=tiny_flux_fill / "transformer"
    )
    assert np.array_equal(job(replaced)[0], fill32_images)  # the same weights: the same pixels


def test_a_folder_of_another_variant_is_one_sentence(tiny_flux_fill, tiny_flux):
    with pytest.raises(InputError, match="takes 64 input channels but this flux-fill model's transformer takes 384"):
        Inpainter.from_pretrained(tiny_flux_fill, device="cpu", transformer=tiny_flux / "transformer")


def test_a_folder_of_another_class_is_one_sentence(tiny_flux_fill):
    with pytest.raises(InputError, match="holds a AutoencoderKL, but this flux-fill model's transformer is a Flux"):
        Inpainter.from_pretrained(tiny_flux_fill, device="cpu", transformer=tiny_flux_fill / "vae")


@pytest.fixture
def nf4_folder(tmp_path) -> Path:
    """A transformer folder saved in NF4 by bitsandbytes, as far as loading reads it first: its config."""
    folder = tmp_path / "transformer-nf4"
    folder.mkdir()
    quantization = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    (folder / "config.json").write_text(
        __import__("json").dumps({"_class_name": "FluxTransformer2DModel", "quantization_config": quantization})
    )
    return folder


def test_an_nf4_transformer_on_a_cpu_is_one_sentence_before_loading(nf4_folder, tmp_path, capsys):
    # diffusers' bitsandbytes quantizer refuses to load without a GPU, whether or not the package is installed.
    code, _, err = run_cli(cli_job(tmp_path, "--device", "cpu", "--transformer", nf4_folder), capsys)
    assert_one_line_error(code, err, "quantized with bitsandbytes (NF4 or int8), which diffusers runs only on a GPU")


def test_an_nf4_transformer_without_bitsandbytes_is_one_sentence(nf4_folder, monkeypatch):
    monkeypatch.setattr("inpaintkit.quantized.installed", lambda package: package != "bitsandbytes")
    with pytest.raises(InputError, match="which is not installed here: pip install bitsandbytes"):
        check_bitsandbytes(nf4_folder, torch.device("cuda"))  # no GPU needed: only the device's kind is read


def test_the_cli_passes_the_memory_flags_on(tiny_flux_fill, fill_gguf):
    from inpaintkit.cli import build_parser
    from inpaintkit.model_arguments import inpainter_from_arguments

    def load(*options: str) -> Inpainter:
        job_arguments = ["run", "--image", "i.png", "--output", "o.png", "--model", str(tiny_flux_fill)]
        return inpainter_from_arguments(build_parser().parse_args([*job_arguments, "--device", "cpu", *options]))

    quantized = load("--transformer", str(fill_gguf))
    assert quantized.components.denoiser_name == str(fill_gguf)
    assert type(quantized.components.unet.transformer_blocks[0].attn.to_q).__name__ == "GGUFLinear"
    fp8 = load("--fp8-weights")
    assert fp8.components.acceleration.fp8_weights is True
    assert fp8.components.unet.transformer_blocks[0].attn.to_q.weight.dtype == torch.float8_e4m3fn


def cli_job(tmp_path: Path, *options) -> list:
    """`inpaintkit run` on a small picture; the model does not exist unless --model is among `options`."""
    from PIL import Image

    Image.fromarray(gradient_image(32, 32)).save(tmp_path / "image.png")
    Image.fromarray(box_mask(32, 32, (8, 8, 16, 16))).save(tmp_path / "mask.png")
    model = [] if "--model" in options else ["--model", tmp_path / "nowhere"]
    return [
        "run", "--image", tmp_path / "image.png", "--mask", tmp_path / "mask.png", "--output", tmp_path / "out.png",
        *model, *options,
    ]  # fmt: skip


def test_fp8_weights_with_a_per_job_lora_is_one_sentence(tiny4, tmp_path):
    """peft's LoRA layers, loaded after the fp8 cast, would be stored in fp8 and fail inside the job with a
    traceback; fused at load (--fuse-lora) they are merged before the cast and work."""
    from inpaintkit import Inpainter
    from inpaintkit.errors import InputError
    from inpaintkit.tiny import make_tiny_lora

    lora = make_tiny_lora(tiny4, tmp_path / "style.safetensors")
    fp8 = Inpainter.from_pretrained(tiny4, device="cpu", fp8_weights=True)
    image, mask = gradient_image(64, 48), box_mask(64, 48, (16, 8, 48, 40))
    with pytest.raises(InputError, match="fuse them at load"):
        fp8(image, mask, "x", steps=2, seed=1, loras=(str(lora),))
