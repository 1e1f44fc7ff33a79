r"""`--kid-features inception` (the default) through the real loader, offline: the FID Inception-v3 ported from
torch-fidelity (inpaintkit.evaluation.inception, torch alone), its weights read from torch.hub's cache
($TORCH_HOME/hub/checkpoints) or reported unavailable with the reason; nothing is downloaded in a test.

The weights here are random, saved under the real file's name and with its keys. The last test compares the port
with torch-fidelity itself; it is skipped, saying so, where torch-fidelity cannot be imported (it is no dependency:
its package imports torchvision). To run it, with torch-fidelity and a stand-in torchvision (its package imports
torchvision, its Inception network does not use it) outside the venv, never in it:

    .venv/bin/pip install --no-deps --target /tmp/tf torch-fidelity==0.4.0
    python3 - <<'PY'
    import pathlib
    stub = 'def __getattr__(name):\n    if name.startswith("__"):\n        raise AttributeError(name)\n'
    stub += '    return type(name, (), {})\n'
    root = pathlib.Path("/tmp/tvstub/torchvision")
    (root / "transforms").mkdir(parents=True, exist_ok=True)
    for name in ("datasets", "models", "transforms/functional"):
        (root / f"{name}.py").write_text(stub)
    (root / "transforms/__init__.py").write_text("from . import functional  # noqa\n" + stub)
    (root / "__init__.py").write_text('from . import datasets, models, transforms  # noqa\n__version__ = "0.0-stub"\n')
    PY
    PYTHONPATH=/tmp/tf:/tmp/tvstub .venv/bin/python -m pytest tests/test_kid_inception.py -s -k torch_fidelity
"""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
import torch

from inpaintkit.evaluation import inception, learned_metrics
from inpaintkit.evaluation.learned_metrics import kernel_inception_distance, kid_crop, load_learned_metrics

from .conftest import gradient_image

# torch-fidelity 0.4.0's URL_INCEPTION_V3, and the name torch.hub gives the cached file
URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"


@pytest.fixture
def no_network(monkeypatch):
    """Any download or connection attempt fails the test loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to use the network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch.hub cache: $TORCH_HOME/hub."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert torch.hub.get_dir() == str(tmp_path / "torch" / "hub")  # torch.hub reads TORCH_HOME on every call
    return tmp_path / "torch"


@pytest.fixture(scope="module")
def random_weights() -> dict[str, torch.Tensor]:
    """Random weights with the real file's keys (torch-fidelity's converter writes no BatchNorm num_batches_tracked)
    and activations of order 1 through all the layers, so that any difference in a block shows in the features."""
    generator = torch.Generator().manual_seed(0)
    weights = {}
    for name, tensor in inception.InceptionV3Features().state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        if name.endswith("conv.weight") or name == "fc.weight":
            fan_in = tensor[0].numel()
            value = torch.randn(tensor.shape, generator=generator) * (2 / fan_in) ** 0.5
        elif name.endswith(("bn.weight", "running_var")):
            value = 0.5 + torch.rand(tensor.shape, generator=generator)
        else:  # BatchNorm bias and running mean, fc bias
            value = 0.1 * torch.randn(tensor.shape, generator=generator)
        weights[name] = value
    return weights


def cache(torch_home, weights) -> None:
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.save(weights, checkpoints / WEIGHTS_NAME)


def uint8_images(count: int, height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, height, width), dtype=torch.uint8, generator=generator)


def test_the_weights_are_torch_fidelitys_file_in_torch_hubs_cache(torch_home):
    assert inception.URL_INCEPTION_V3 == URL
    assert inception.weights_path() == torch_home / "hub" / "checkpoints" / WEIGHTS_NAME


def test_cached_inception_weights_load_offline_and_give_a_kid(torch_home, no_network, random_weights):
    cache(torch_home, random_weights)

    learned = load_learned_metrics(str(torch_home / "no-such-clip"), "inception")  # the path --kid-features takes

    assert "kid" not in learned.unavailable and learned.kid_features is not None
    loaded = learned.kid_features.state_dict()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in random_weights.items())  # our file's weights
    real = [kid_crop(gradient_image(48, 48, seed=seed)) for seed in range(2)]
    fake = [kid_crop(np.full((48, 48, 3), 40 * seed, dtype=np.uint8)) for seed in range(2)]
    features = learned.kid_features(torch.from_numpy(np.stack(real + fake)).permute(0, 3, 1, 2))
    assert features.shape == (4, 2048) and features.dtype == torch.float32 and torch.isfinite(features).all()
    assert (torch.cdist(features, features) + torch.eye(4)).min() > 0  # each crop's features differ from the others'
    result = kernel_inception_distance(real, fake, learned.kid_features)
    assert np.isfinite(result.mean) and np.isfinite(result.std) and result.mean > 0
    assert (result.subset_size, result.samples) == (2, 2)


def test_missing_weights_are_downloaded_by_torch_hub_into_its_cache(torch_home, random_weights, monkeypatch):
    downloads = []

    def download(url, destination, *args, **kwargs):  # what torch.hub does: a temporary file, then renamed
        downloads.append(url)
        torch.save(random_weights, destination)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)

    features = learned_metrics.inception_features()

    assert downloads == [URL]
    assert (torch_home / "hub" / "checkpoints" / WEIGHTS_NAME).is_file()
    assert torch.equal(features.state_dict()["fc.bias"], random_weights["fc.bias"])


def test_uncached_inception_weights_offline_are_unavailable_with_the_reason(torch_home, no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    learned = load_learned_metrics(str(torch_home / "no-such-clip"), "inception")

    assert learned.kid_features is None
    reason = learned.unavailable["kid"]
    assert f"not cached at {torch_home / 'hub' / 'checkpoints' / WEIGHTS_NAME}" in reason
    assert "HF_HUB_OFFLINE" in reason and f"copy {URL} there" in reason and "--kid-features clip" in reason


def test_uncached_inception_weights_without_network_are_unavailable_with_the_reason(torch_home, monkeypatch):
    """HF_HUB_OFFLINE unset and no network: the download fails (as urllib fails) and is reported, not raised."""

    def no_route(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_route)

    learned = load_learned_metrics(str(torch_home / "no-such-clip"), "inception")

    assert learned.kid_features is None
    reason = learned.unavailable["kid"]
    assert f"could not be downloaded from {URL} into {torch_home / 'hub' / 'checkpoints' / WEIGHTS_NAME}" in reason
    assert "Temporary failure in name resolution" in reason


def test_a_truncated_cached_file_is_unavailable_with_its_path(torch_home, no_network):
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / WEIGHTS_NAME).write_bytes(b"PK\x03\x04 an interrupted copy")

    learned = load_learned_metrics(str(torch_home / "no-such-clip"), "inception")

    assert learned.kid_features is None
    assert f"cached weights {checkpoints / WEIGHTS_NAME} cannot be loaded" in learned.unavailable["kid"]
    assert "delete the file" in learned.unavailable["kid"]


def test_a_cached_file_of_other_weights_is_refused(torch_home, no_network, random_weights):
    """Loaded strictly: a file without the logits layer (or with any other key set) is not these weights."""
    cache(torch_home, {name: tensor for name, tensor in random_weights.items() if not name.startswith("fc.")})

    learned = load_learned_metrics(str(torch_home / "no-such-clip"), "inception")

    assert learned.kid_features is None
    assert "cannot be loaded (Error(s) in loading state_dict" in learned.unavailable["kid"]


def test_the_features_need_uint8_images():
    with pytest.raises(ValueError, match=r"need an Nx3xHxW uint8 tensor, got torch.float32 \(1, 3, 8, 8\)"):
        inception.InceptionV3Features()(torch.zeros(1, 3, 8, 8))


def test_hub_offline_reads_the_variable_as_huggingface_hub_does(monkeypatch):
    for value, offline in (("1", True), ("true", True), ("YES", True), ("0", False), ("", False)):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert learned_metrics.hub_offline() is offline


def test_the_port_computes_torch_fidelitys_features(tmp_path, random_weights):
    """The same weights in both networks, images of several sizes (so the TensorFlow-style resize is exercised):
    the same 2048-d features. Both run the same float32 operations in the same order, so on CPU they agree to the
    bit in practice; the tolerance (1e-5 of the features' scale) only allows for a convolution algorithm that
    oneDNN might pick differently for the two calls, i.e. float32 rounding accumulated over the ~95 layers."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    except Exception as error:  # not installed (it is no dependency), or its torchvision cannot be imported
        pytest.skip(f"torch-fidelity cannot be imported here ({type(error).__name__}: {error})")
    assert URL_INCEPTION_V3 == URL
    path = tmp_path / WEIGHTS_NAME
    torch.save(random_weights, path)
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    ours = inception.InceptionV3Features()
    ours.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert ours.state_dict().keys() == theirs.state_dict().keys()

    for seed, (height, width) in enumerate([(299, 299), (64, 48), (512, 384)]):
        images = uint8_images(2, height, width, seed)
        resized = inception.interpolate_bilinear_2d_like_tensorflow1x(images.float(), (299, 299))
        assert torch.equal(resized, interpolate_bilinear_2d_like_tensorflow1x(images.float(), (299, 299), None, False))
        started = time.perf_counter()
        expected = theirs(images)[0]
        features = ours(images)
        difference = (features - expected).abs().max().item()
        print(
            f"{height}x{width}: max |ours - torch-fidelity| = {difference:.3g} (features up to "
            f"{expected.abs().max().item():.3g}; {time.perf_counter() - started:.2f} s)"
        )
        assert features.shape == expected.shape == (2, 2048)
        assert expected.std() > 0.01  # features that depend on the image: a wrong block would show
        assert difference <= 1e-5 * expected.abs().max().item()
