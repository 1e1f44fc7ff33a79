"""KID's default features: the FID Inception-v3 (2048-d pool3 features), in torch alone.

Ported from torch-fidelity 0.4.0 (https://github.com/toshas/torch-fidelity): `FeatureExtractorInceptionV3` in
torch_fidelity/feature_extractor_inceptionv3.py and `interpolate_bilinear_2d_like_tensorflow1x` in
torch_fidelity/interpolate_compat_tensorflow.py, which torchmetrics' KernelInceptionDistance uses by default.
torch-fidelity adapts pytorch-fid's inception.py (https://github.com/mseitzer/pytorch-fid, Apache License 2.0),
itself torchvision's Inception-v3 patched to compute what TensorFlow's Inception graph of 2015-12-05
(inception-2015-12-05.tgz, the network of the original FID and KID code; Apache License 2.0) computes. The weights
are that graph's, converted by torch-fidelity and downloaded from its release (URL_INCEPTION_V3) by
torch.hub.load_state_dict_from_url into $TORCH_HOME/hub/checkpoints/, as torch-fidelity does: a file cached by
either is used by both.

Why a port: torch-fidelity's package imports torchvision, which must be the build made for the installed torch
(PyPI's Linux torchvision cannot be imported beside a CPU torch, and then neither can torchmetrics).

Changes from torch-fidelity: only the 2048-d features are computed (the logits layer `fc` is kept, unused, because
the weights file has it and is loaded strictly); float32 only; the resize keeps only its CPU-bit-exact ("slow")
method and drops tracing, scale factors and align_corners=True; no torchvision, tqdm or torch_fidelity imports;
the weights are loaded with weights_only=True. The module and parameter names are torch-fidelity's, so its weights
file loads with load_state_dict(strict=True).

Copyright 2020 Anton Obukhov (torch-fidelity)

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# torch-fidelity 0.4.0's URL_INCEPTION_V3: the TensorFlow Inception weights converted to a PyTorch state dict.
URL_INCEPTION_V3 = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INPUT_IMAGE_SIZE = 299


def weights_path() -> Path:
    """Where torch.hub.load_state_dict_from_url keeps the weights: $TORCH_HOME/hub/checkpoints/ + the URL's name."""
    return Path(torch.hub.get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[-1]


def load_inception(progress: bool = True) -> InceptionV3Features:
    """The network with torch-fidelity's weights: read from weights_path(), downloaded there first if missing."""
    state_dict = torch.hub.load_state_dict_from_url(
        URL_INCEPTION_V3, map_location="cpu", progress=progress, weights_only=True
    )
    network = InceptionV3Features()
    network.load_state_dict(state_dict, strict=True)
    return network


class InceptionV3Features(nn.Module):
    """torch-fidelity's FeatureExtractorInceptionV3 for features_list=["2048"]: Nx3xHxW uint8 RGB in, any size (resized
    to 299x299 as TensorFlow 1.x resizes), Nx2048 float32 out. Always in evaluation mode, without gradients."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.MaxPool_1 = nn.MaxPool2d(kernel_size=3, stride=2)

        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.MaxPool_2 = nn.MaxPool2d(kernel_size=3, stride=2)

        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)

        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE_1(1280)
        self.Mixed_7c = InceptionE_2(2048)
        self.AvgPool = nn.AdaptiveAvgPool2d(output_size=(1, 1))

        self.fc = nn.Linear(2048, 1008)  # the logits: in the weights file, never computed here

        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> InceptionV3Features:
        """Stays in evaluation mode (BatchNorm must use the converted running statistics)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"Inception-v3 features need an Nx3xHxW uint8 tensor, got {got}")
        x = x.to(torch.float32)
        x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(INPUT_IMAGE_SIZE, INPUT_IMAGE_SIZE), align_corners=False)
        x = (x - 128) / 128  # the graph multiplies by 0.0078125: the same, bit for bit
        # N x 3 x 299 x 299
        x = self.Conv2d_1a_3x3(x)
        x = self.Conv2d_2a_3x3(x)
        x = self.Conv2d_2b_3x3(x)
        x = self.MaxPool_1(x)
        # N x 64 x 73 x 73
        x = self.Conv2d_3b_1x1(x)
        x = self.Conv2d_4a_3x3(x)
        x = self.MaxPool_2(x)
        # N x 192 x 35 x 35
        x = self.Mixed_5b(x)
        x = self.Mixed_5c(x)
        x = self.Mixed_5d(x)
        x = self.Mixed_6a(x)
        x = self.Mixed_6b(x)
        x = self.Mixed_6c(x)
        x = self.Mixed_6d(x)
        x = self.Mixed_6e(x)
        # N x 768 x 17 x 17
        x = self.Mixed_7a(x)
        x = self.Mixed_7b(x)
        x = self.Mixed_7c(x)
        # N x 2048 x 8 x 8
        x = self.AvgPool(x)
        return torch.flatten(x, 1).to(torch.float32)  # N x 2048


def interpolate_bilinear_2d_like_tensorflow1x(
    input: torch.Tensor, size: tuple[int, int], align_corners: bool = False
) -> torch.Tensor:
    """Bilinear resize of an NxCxHxW float tensor to `size` as TensorFlow 1.x's resize_bilinear computes it
    (torch-fidelity's "slow" method: bit-exact on CPU, about 1e-4 off on GPU). Only align_corners=False."""
    if input.dim() != 4 or not torch.is_floating_point(input):
        raise ValueError("input must be a 4-D floating point tensor")
    if align_corners:
        raise ValueError("only align_corners=False is implemented")
    out_height, out_width = size
    scale_x = input.shape[3] / out_width
    scale_y = input.shape[2] / out_height

    grid_x = torch.arange(0, out_width, 1, dtype=input.dtype, device=input.device)
    grid_x = grid_x * torch.tensor(scale_x, dtype=torch.float32)
    grid_x_lo = grid_x.long()
    grid_x_hi = (grid_x_lo + 1).clamp_max(input.shape[3] - 1)
    grid_dx = grid_x - grid_x_lo.float()

    grid_y = torch.arange(0, out_height, 1, dtype=input.dtype, device=input.device)
    grid_y = grid_y * torch.tensor(scale_y, dtype=torch.float32)
    grid_y_lo = grid_y.long()
    grid_y_hi = (grid_y_lo + 1).clamp_max(input.shape[2] - 1)
    grid_dy = grid_y - grid_y_lo.float()

    in_00 = input[:, :, grid_y_lo, :][:, :, :, grid_x_lo]
    in_01 = input[:, :, grid_y_lo, :][:, :, :, grid_x_hi]
    in_10 = input[:, :, grid_y_hi, :][:, :, :, grid_x_lo]
    in_11 = input[:, :, grid_y_hi, :][:, :, :, grid_x_hi]

    in_0 = in_00 + (in_01 - in_00) * grid_dx.view(1, 1, 1, out_width)
    in_1 = in_10 + (in_11 - in_10) * grid_dx.view(1, 1, 1, out_width)
    return in_0 + (in_1 - in_0) * grid_dy.view(1, 1, out_height, 1)


class BasicConv2d(nn.Module):
    """Original BasicConv2d block"""

    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        x = self.conv(x)
        x = self.bn(x)
        return F.relu(x, inplace=True)


class InceptionA(nn.Module):
    """Block from torchvision patched to be compatible with TensorFlow implementation"""

    def __init__(self, in_channels, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)

        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)

        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)

        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x):
        branch1x1 = self.branch1x1(x)

        branch5x5 = self.branch5x5_1(x)
        branch5x5 = self.branch5x5_2(branch5x5)

        branch3x3dbl = self.branch3x3dbl_1(x)
        branch3x3dbl = self.branch3x3dbl_2(branch3x3dbl)
        branch3x3dbl = self.branch3x3dbl_3(branch3x3dbl)

        # Patch: Tensorflow's average pool does not use the padded zero's in its average calculation
        branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        branch_pool = self.branch_pool(branch_pool)

        return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):
    """Original block"""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)

        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        branch3x3 = self.branch3x3(x)

        branch3x3dbl = self.branch3x3dbl_1(x)
        branch3x3dbl = self.branch3x3dbl_2(branch3x3dbl)
        branch3x3dbl = self.branch3x3dbl_3(branch3x3dbl)

        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)

        return torch.cat([branch3x3, branch3x3dbl, branch_pool], 1)


class InceptionC(nn.Module):
    """Block from torchvision patched to be compatible with TensorFlow implementation"""

    def __init__(self, in_channels, channels_7x7):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)

        c7 = channels_7x7
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))

        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))

        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x):
        branch1x1 = self.branch1x1(x)

        branch7x7 = self.branch7x7_1(x)
        branch7x7 = self.branch7x7_2(branch7x7)
        branch7x7 = self.branch7x7_3(branch7x7)

        branch7x7dbl = self.branch7x7dbl_1(x)
        branch7x7dbl = self.branch7x7dbl_2(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_3(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_4(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_5(branch7x7dbl)

        # Patch: Tensorflow's average pool does not use the padded zero's in its average calculation
        branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        branch_pool = self.branch_pool(branch_pool)

        return torch.cat([branch1x1, branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):
    """Original block"""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)

        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = self.branch3x3_2(branch3x3)

        branch7x7x3 = self.branch7x7x3_1(x)
        branch7x7x3 = self.branch7x7x3_2(branch7x7x3)
        branch7x7x3 = self.branch7x7x3_3(branch7x7x3)
        branch7x7x3 = self.branch7x7x3_4(branch7x7x3)

        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class InceptionE(nn.Module):
    """Block from torchvision patched to be compatible with TensorFlow implementation. torch-fidelity's InceptionE_1
    and InceptionE_2, which differ only in the pooling of their last branch (`max_pool`)."""

    max_pool = False

    def __init__(self, in_channels):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)

        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))

        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))

        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x):
        branch1x1 = self.branch1x1(x)

        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)

        branch3x3dbl = self.branch3x3dbl_1(x)
        branch3x3dbl = self.branch3x3dbl_2(branch3x3dbl)
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)

        if self.max_pool:
            # Patch: TensorFlow Inception model uses max pooling instead of average pooling. This is likely an error
            # in this specific Inception implementation, as other Inception models use average pooling here (which
            # matches the description in the paper).
            branch_pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            # Patch: Tensorflow's average pool does not use the padded zero's in its average calculation
            branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        branch_pool = self.branch_pool(branch_pool)

        return torch.cat([branch1x1, branch3x3, branch3x3dbl, branch_pool], 1)


class InceptionE_1(InceptionE):
    """First InceptionE block (Mixed_7b): average pooling."""


class InceptionE_2(InceptionE):
    """Second InceptionE block (Mixed_7c): max pooling, as the TensorFlow graph does."""

    max_pool = True
