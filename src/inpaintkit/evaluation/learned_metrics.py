"""Metrics that need a network: CLIP score (torchmetrics CLIPScore) and KID (torchmetrics KernelInceptionDistance).

A network whose weights cannot be loaded (offline, package missing) makes its metrics *unavailable*,
with the reason; the other metrics still run. Tests and users can inject any CLIP model/processor
pair and any KID feature extractor (an nn.Module taking Nx3xHxW uint8 and returning NxD features).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from ..errors import first_line
from ..names import DEFAULT_CLIP_MODEL
from . import inception

log = logging.getLogger("inpaintkit")

KID_CROP_SIZE = 299  # Inception-v3's input size; the crops are resized to it for every extractor
MAX_SUBSET_SIZE = 1000  # torchmetrics' default subset size
KID_BATCH = 64  # crops per feature-extractor call: Inception's activations for a whole PIPE split at once would not fit
CPU = torch.device("cpu")


class _TensorFeatures(torch.nn.Module):
    """A CLIP model whose get_image/text_features return tensors.

    torchmetrics 1.9 normalises what these return; transformers 5 returns a model output whose
    `pooler_output` holds the projected features.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return _tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return _tensor(self.model.get_text_features(*args, **kwargs))


def _tensor(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipScorer:
    """CLIP score = 100 * max(cos(image embedding, text embedding), 0), as torchmetrics defines it."""

    def __init__(self, model: torch.nn.Module, processor, device: torch.device = CPU):
        from torchmetrics.multimodal.clip_score import CLIPScore

        wrapped = _TensorFeatures(model.eval())
        self.tokenizer = processor.tokenizer
        self.device = device
        self.metric = CLIPScore(model_name_or_path=lambda: (wrapped, processor)).to(device)

    @torch.no_grad()
    def __call__(self, image: np.ndarray, prompt: str) -> float:
        self.metric.reset()
        pixels = (
            torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(self.device)
        )  # CLIPScore runs where its input is
        self.metric.update(pixels, [self.fit(prompt)])
        return float(self.metric.compute())

    def fit(self, prompt: str) -> str:
        """The longest word prefix of the prompt that fits CLIP's 77 tokens. torchmetrics would cut the
        tokens itself and lose the end-of-text token, whose embedding CLIP's text feature is."""

        def fits(words: list[str]) -> bool:
            return len(self.tokenizer(" ".join(words)).input_ids) <= self.tokenizer.model_max_length

        words = prompt.split()
        if fits(words):
            return prompt
        low, high = 0, len(words)  # fits(words[:low]) holds, fits(words[:high]) does not
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if fits(words[:middle]) else (low, middle)
        return " ".join(words[:low])


class ClipImageFeatures(torch.nn.Module):
    """A KID feature extractor: CLIP's projected image embeddings (for when Inception's weights are not at hand)."""

    def __init__(self, model: torch.nn.Module, processor):
        super().__init__()
        self.model = _TensorFeatures(model.eval())
        self.processor = processor

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        inputs = self.processor(images=[image.cpu() for image in images], return_tensors="pt")
        return self.model.get_image_features(inputs["pixel_values"].to(images.device)).double()


@dataclass
class LearnedMetrics:
    """What is available: a CLIP scorer and a KID feature extractor, or the reason each is not."""

    clip: Optional[ClipScorer] = None
    kid_features: Optional[torch.nn.Module] = None
    kid_name: str = "custom"
    device: torch.device = CPU  # where CLIP and the KID features run
    unavailable: dict[str, str] = field(default_factory=dict)  # metric family -> reason


def load_learned_metrics(
    clip_model: str = DEFAULT_CLIP_MODEL, kid_features: str = "inception", device: torch.device = CPU
) -> LearnedMetrics:
    """Load the CLIP model and the KID extractor on `device`; each one that fails is recorded as unavailable with its
    reason.
    """
    learned = LearnedMetrics(kid_name=kid_features, device=device)
    clip_pair = None
    try:
        clip_pair = load_clip(clip_model)
        learned.clip = ClipScorer(*clip_pair, device=device)
    except Exception as error:  # offline, unknown id, not a CLIP model: the metric is unavailable, the run goes on
        learned.unavailable["clip"] = f"CLIP model {clip_model} could not be loaded: {first_line(error)}"
    if kid_features == "clip":
        if clip_pair is None:
            learned.unavailable["kid"] = (
                f"KID with CLIP features needs the CLIP model, which could not be loaded ({clip_model})"
            )
        else:
            learned.kid_features = ClipImageFeatures(*clip_pair)
    else:
        try:
            learned.kid_features = inception_features()
        except Exception as error:  # its weights are not cached and cannot be downloaded, or are corrupt
            learned.unavailable["kid"] = f"Inception features for KID are unavailable: {first_line(error)}"
    for family, reason in learned.unavailable.items():
        log.warning("%s metrics unavailable: %s", family.upper(), reason)
    return learned


def load_clip(model_id: str):
    """A CLIPModel and CLIPProcessor from a hub id (cache only when HF_HUB_OFFLINE=1) or a local folder."""
    from transformers import CLIPModel, CLIPProcessor

    if model_id.startswith(("/", ".", "~")) and not Path(model_id).expanduser().exists():
        raise FileNotFoundError(
            f"no such folder {model_id}"
        )  # rather than transformers' "Repo id must be in the form..."
    return CLIPModel.from_pretrained(model_id), CLIPProcessor.from_pretrained(model_id)


def inception_features() -> torch.nn.Module:
    """The FID Inception-v3 (torch-fidelity's weights, 2048-d pool3 features; inception.py, torch alone).

    The weights (about 96 MB) are downloaded once by torch.hub into inception.weights_path() and read from there
    afterwards, without network. With HF_HUB_OFFLINE set and no cached file, no download is tried. Every failure is
    an exception whose first line says what to do.
    """
    weights = inception.weights_path()
    if not weights.is_file():
        if hub_offline():
            raise RuntimeError(
                f"its weights are not cached at {weights} and HF_HUB_OFFLINE is set, so they are not downloaded; "
                f"run once with network (or copy {inception.URL_INCEPTION_V3} there), or use --kid-features clip"
            )
        log.info("downloading the Inception-v3 weights for KID (about 96 MB, once) into %s", weights)
    try:
        return inception.load_inception(progress=log.isEnabledFor(logging.INFO))  # no progress bar with --quiet
    except Exception as error:
        if weights.is_file():  # truncated, not these weights (or a download that is not them): it stays until deleted
            raise RuntimeError(
                f"its cached weights {weights} cannot be loaded ({first_line(error)}); delete the file to download "
                "it again"
            ) from error
        if isinstance(error, OSError):  # urllib's URLError (no network, DNS), a full disk
            raise RuntimeError(
                f"its weights could not be downloaded from {inception.URL_INCEPTION_V3} into {weights}: "
                f"{first_line(error)}"
            ) from error
        raise


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it: the project's one switch for "no network"."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


@dataclass
class KidResult:
    mean: float
    std: float
    subset_size: int
    samples: int


def choose_subset_size(samples: int) -> int:
    """Half the samples (so the random subsets differ and the std means something), at least 2, at most 1000."""
    return min(MAX_SUBSET_SIZE, max(2, samples // 2))


def kernel_inception_distance(
    real: list[np.ndarray], fake: list[np.ndarray], features: torch.nn.Module, device: torch.device = CPU
) -> KidResult:
    """KID between two sets of crops (each resized to 299x299); needs at least 2 of each. Reproducible (seeded subsets).

    The features are computed on `device`, KID_BATCH crops at a time."""
    from torchmetrics.image.kid import KernelInceptionDistance

    samples = min(len(real), len(fake))
    if samples < 2:
        raise ValueError(f"KID needs at least 2 samples per method, got {samples}")
    subset_size = choose_subset_size(samples)
    with warnings.catch_warnings():  # "will save all extracted features in buffer": that is the point here
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=features, subset_size=subset_size, subsets=100).to(device)
    with torch.no_grad():
        for crops, is_real in ((real, True), (fake, False)):
            for start in range(0, len(crops), KID_BATCH):
                metric.update(_batch(crops[start : start + KID_BATCH]).to(device), real=is_real)
        with torch.random.fork_rng(
            devices=[]
        ):  # the subsets are drawn with torch's global RNG: fix it, leave it as it was
            torch.manual_seed(0)
            mean, std = metric.compute()
    return KidResult(float(mean), float(std), subset_size, samples)


def kid_crop(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((KID_CROP_SIZE, KID_CROP_SIZE), Image.Resampling.BICUBIC))


def _batch(crops: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
