"""Hand-written torch reference CNNs (torchvision is not available), one per structural
pattern the channel analysis must handle: residual adds, depthwise convs, squeeze-excitation
products, channel concatenation, flatten into Linear, channel split/shuffle, and LayerNorm over
a channels-last residual stream (ConvNeXt).

`resnet50`, `resnet18` and `mobilenet_v2` follow torchvision's architectures exactly at their
default sizes; the others are small but structurally faithful. `BUILDERS` holds tiny test
configurations and `build(name)` gives a deterministic, eval-mode instance with non-trivial
BatchNorm statistics (fresh BatchNorm is identity-like and hides bugs).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

TEST_INPUT_SHAPE: tuple[int, int, int, int] = (1, 3, 32, 32)
"""Input shape every test configuration in BUILDERS accepts."""


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> optional activation, the unit every builder repeats."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def _init_torchvision_style(module: nn.Module) -> None:
    """Kaiming (fan_out) convs, unit BatchNorm, N(0, 0.01) Linear: torchvision's ResNet and MobileNetV2 init."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------- ResNet (torchvision v1.5)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: the stride sits on the 3x3 conv, as in torchvision."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int], num_classes: int, width: int) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0], 1)
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        _init_torchvision_style(self)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(num_classes: int = 1000, width: int = 64) -> ResNet:
    """torchvision's ResNet-50 v1.5 (25,557,032 params at the defaults); `width` scales the base."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, width)


def resnet18(num_classes: int = 1000, width: int = 64) -> ResNet:
    """torchvision's ResNet-18 (basic blocks [2, 2, 2, 2]); `width` scales the base."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, width)


# ---------------------------------------------------------------- MobileNetV2 (torchvision)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: nearest multiple of `divisor`, never 10% below `value`."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn(inp, hidden, 1, act=nn.ReLU6))
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0) -> nn.Module:
    """torchvision's MobileNetV2 (3,504,872 params at the defaults)."""
    settings = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
    input_channel = _make_divisible(32 * width_mult)
    last_channel = _make_divisible(1280 * max(1.0, width_mult))
    features: list[nn.Module] = [_conv_bn(3, input_channel, 3, 2, act=nn.ReLU6)]
    for t, c, n, s in settings:
        output_channel = _make_divisible(c * width_mult)
        for i in range(n):
            features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
            input_channel = output_channel
    features.append(_conv_bn(input_channel, last_channel, 1, act=nn.ReLU6))
    model = _Classifier(nn.Sequential(*features), nn.Sequential(nn.Dropout(0.2), nn.Linear(last_channel, num_classes)))
    _init_torchvision_style(model)  # MobileNetV2's convs have no bias; kaiming's default gain is ReLU's
    return model


class _Classifier(nn.Module):
    """features -> [global average pool] -> flatten -> classifier (torchvision's head layout;
    without the pool, as in VGG, channel c owns features c*H*W .. (c+1)*H*W-1)."""

    def __init__(self, features: nn.Module, classifier: nn.Module, pool: bool = True) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if self.pool:
            x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------- squeeze-excitation


class SqueezeExcite(nn.Module):
    """Channel gate: pool -> reduce -> ReLU -> expand -> Sigmoid -> Mul. The `linear` form
    (Linear layers on the pooled vector, then unsqueeze) exports differently from the 1x1-conv
    form, so the network uses both."""

    def __init__(self, channels: int, reduced: int, linear: bool) -> None:
        super().__init__()
        self.linear = linear
        if linear:
            self.reduce: nn.Module = nn.Linear(channels, reduced)
            self.expand: nn.Module = nn.Linear(reduced, channels)
        else:
            self.reduce = nn.Conv2d(channels, reduced, 1)
            self.expand = nn.Conv2d(reduced, channels, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.linear:
            scale = torch.sigmoid(self.expand(self.relu(self.reduce(x.mean((2, 3))))))
            return x * scale[:, :, None, None]
        scale = torch.sigmoid(self.expand(self.relu(self.reduce(nn.functional.adaptive_avg_pool2d(x, 1)))))
        return x * scale


class SEBlock(nn.Module):
    """Residual basic block with an SE gate on the residual branch (SE-ResNet layout)."""

    def __init__(self, cin: int, cout: int, stride: int, linear_se: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, 3, stride), _conv_bn(cout, cout, 3, act=None))
        self.se = SqueezeExcite(cout, max(cout // 4, 1), linear_se)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else _conv_bn(cin, cout, 1, stride, act=None)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.se(self.body(x)) + self.shortcut(x))


def se_net(num_classes: int = 10, width: int = 16) -> nn.Module:
    """Small SE-ResNet: stem, then SE blocks (conv-form and linear-form gates, identity and
    projection shortcuts), global pool, Linear."""
    blocks = nn.Sequential(
        _conv_bn(3, width, 3),
        SEBlock(width, width, 1, linear_se=False),
        SEBlock(width, width * 2, 2, linear_se=True),
        SEBlock(width * 2, width * 2, 1, linear_se=False),
        SEBlock(width * 2, width * 4, 2, linear_se=False),
    )
    return _Classifier(blocks, nn.Linear(width * 4, num_classes))


# ---------------------------------------------------------------- inception


class InceptionModule(nn.Module):
    """Four branches concatenated along channels: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 | maxpool-1x1."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.branch1 = _conv_bn(cin, width, 1)
        self.branch3 = nn.Sequential(_conv_bn(cin, width, 1), _conv_bn(width, width * 2, 3))
        self.branch5 = nn.Sequential(_conv_bn(cin, width // 2, 1), _conv_bn(width // 2, width, 3), _conv_bn(width, width, 3))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), _conv_bn(cin, width // 2, 1))
        self.out_channels = width + width * 2 + width + width // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1)


def inception_net(num_classes: int = 10, width: int = 8) -> nn.Module:
    """Stem, two inception modules with a max pool between (a concat feeding a concat), pool, Linear."""
    first = InceptionModule(width * 2, width)
    second = InceptionModule(first.out_channels, width)
    body = nn.Sequential(_conv_bn(3, width * 2, 3), first, nn.MaxPool2d(2), second)
    return _Classifier(body, nn.Linear(second.out_channels, num_classes))


# ---------------------------------------------------------------- densenet


class DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1-BN-ReLU-Conv3x3, output concatenated onto the input (pre-activation)."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(inplace=True), nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


def densenet(num_classes: int = 10, growth: int = 8, layers: tuple[int, ...] = (3, 3)) -> nn.Module:
    """DenseNet-BC style: dense blocks joined by transitions (BN-ReLU-Conv1x1-AvgPool, halving
    channels), final BN-ReLU, global pool, Linear."""
    channels = 2 * growth
    modules: list[nn.Module] = [nn.Conv2d(3, channels, 3, 1, 1, bias=False)]
    for index, count in enumerate(layers):
        for _ in range(count):
            modules.append(DenseLayer(channels, growth))
            channels += growth
        if index < len(layers) - 1:
            modules += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, channels // 2, 1, bias=False), nn.AvgPool2d(2)]
            channels //= 2
    modules += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    return _Classifier(nn.Sequential(*modules), nn.Linear(channels, num_classes))


# ---------------------------------------------------------------- VGG


def vgg_net(num_classes: int = 10, width: int = 8) -> nn.Module:
    """Plain conv chain with three max pools (32x32 -> 4x4), flattened NCHW into Linear layers,
    so channel c owns features c*16 .. c*16+15 of the first Linear."""
    cfg = [width, width, "M", width * 2, width * 2, "M", width * 4, "M"]
    layers: list[nn.Module] = []
    cin = 3
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers.append(_conv_bn(cin, int(item), 3))
            cin = int(item)
    hidden = width * 8
    classifier = nn.Sequential(nn.Linear(cin * 4 * 4, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(hidden, num_classes))
    return _Classifier(nn.Sequential(*layers), classifier, pool=False)


# ---------------------------------------------------------------- ShuffleNet v2


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """reshape -> transpose -> reshape, as torchvision writes it."""
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    return torch.transpose(x, 1, 2).contiguous().view(batch, -1, height, width)


class ShuffleUnit(nn.Module):
    """ShuffleNet-v2 unit: stride 1 splits the channels (chunk) and transforms one half; stride 2
    transforms the whole input on two branches. Both concat, then shuffle."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1: nn.Module = nn.Sequential(_conv_bn(cin, cin, 3, stride, groups=cin, act=None), _conv_bn(cin, half, 1))
        else:
            self.branch1 = nn.Identity()
        branch_in = cin if stride > 1 else half
        self.branch2 = nn.Sequential(
            _conv_bn(branch_in, half, 1), _conv_bn(half, half, 3, stride, groups=half, act=None), _conv_bn(half, half, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


def shufflenet(num_classes: int = 10, width: int = 16) -> nn.Module:
    """Stem, two stages of ShuffleNet-v2 units (a stride-2 unit then stride-1 units), 1x1 conv,
    global pool, Linear."""
    stages = [(width * 2, 3), (width * 4, 2)]
    modules: list[nn.Module] = [_conv_bn(3, width, 3)]
    cin = width
    for cout, repeats in stages:
        modules.append(ShuffleUnit(cin, cout, 2))
        modules += [ShuffleUnit(cout, cout, 1) for _ in range(repeats - 1)]
        cin = cout
    modules.append(_conv_bn(cin, width * 8, 1))
    return _Classifier(nn.Sequential(*modules), nn.Linear(width * 8, num_classes))


# ---------------------------------------------------------------- ConvNeXt (torchvision's layout)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor, as torchvision writes it: to NHWC and back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    """Depthwise 7x7, then LayerNorm and an MLP on the NHWC view, a layer scale, the residual."""

    def __init__(self, dim: int, layer_scale: float = 0.5) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.dwconv(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y


class ConvNeXt(nn.Module):
    """Patchify stem with LayerNorm, stages of CNBlocks joined by LayerNorm + 2x2 stride-2 convs,
    average pool, LayerNorm, Linear (torchvision's head). The layer scale is 0.5, not
    torchvision's 1e-6, which would hide the blocks from every check."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (16, 32), depths: tuple[int, ...] = (2, 1)
                 ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 4, 4), LayerNorm2d(widths[0], eps=1e-6)]
        for stage, (width, depth) in enumerate(zip(widths, depths)):
            if stage:
                layers += [LayerNorm2d(widths[stage - 1], eps=1e-6), nn.Conv2d(widths[stage - 1], width, 2, 2)]
            layers += [CNBlock(width) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.norm = LayerNorm2d(widths[-1], eps=1e-6)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1)))
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------- YOLOv8-style detector


class YoloConv(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> SiLU, YOLOv8's `Conv`."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__(_conv_bn(cin, cout, kernel, stride, act=nn.SiLU))


class YoloBottleneck(nn.Module):
    def __init__(self, channels: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1 = YoloConv(channels, channels, 3)
        self.cv2 = YoloConv(channels, channels, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """YOLOv8's C2f: a 1x1 conv split in two halves (Split), bottlenecks chained on the second,
    every intermediate concatenated, a 1x1 conv after."""

    def __init__(self, cin: int, cout: int, repeats: int, shortcut: bool) -> None:
        super().__init__()
        self.hidden = cout // 2
        self.cv1 = YoloConv(cin, 2 * self.hidden)
        self.cv2 = YoloConv((2 + repeats) * self.hidden, cout)
        self.m = nn.ModuleList(YoloBottleneck(self.hidden, shortcut) for _ in range(repeats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.cv1(x).split((self.hidden, self.hidden), 1))
        for block in self.m:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max pools concatenated with their input."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.cv1 = YoloConv(cin, cin // 2)
        self.cv2 = YoloConv(cin // 2 * 4, cout)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [self.cv1(x)]
        for _ in range(3):
            parts.append(self.pool(parts[-1]))
        return self.cv2(torch.cat(parts, 1))


class YoloV8(nn.Module):
    """YOLOv8's detection architecture (backbone, FPN/PAN neck with Upsample + Concat, three
    decoupled heads with separate box and class branches). `decode=True` gives YOLOv8's export
    output [N, 4 + classes, anchors]: DFL-decoded xywh boxes in input pixels and sigmoid class
    scores; `decode=False` gives the three raw head outputs [N, 4 * reg_max + classes, H_i, W_i]
    (a multi-output model)."""

    strides = (8, 16, 32)

    def __init__(self, num_classes: int = 80, width: float = 0.25, depth: float = 0.33, reg_max: int = 16,
                 decode: bool = True) -> None:
        super().__init__()
        c = [max(8, int(round(channels * width))) for channels in (64, 128, 256, 512, 1024)]
        n = [max(1, round(repeats * depth)) for repeats in (3, 6, 6, 3)]
        self.num_classes, self.reg_max, self.decode = num_classes, reg_max, decode
        self.stem = nn.Sequential(YoloConv(3, c[0], 3, 2), YoloConv(c[0], c[1], 3, 2), C2f(c[1], c[1], n[0], True))
        self.p3 = nn.Sequential(YoloConv(c[1], c[2], 3, 2), C2f(c[2], c[2], n[1], True))
        self.p4 = nn.Sequential(YoloConv(c[2], c[3], 3, 2), C2f(c[3], c[3], n[2], True))
        self.p5 = nn.Sequential(YoloConv(c[3], c[4], 3, 2), C2f(c[4], c[4], n[3], True), SPPF(c[4], c[4]))
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.top4 = C2f(c[4] + c[3], c[3], n[3], False)
        self.top3 = C2f(c[3] + c[2], c[2], n[3], False)
        self.down3 = YoloConv(c[2], c[2], 3, 2)
        self.out4 = C2f(c[2] + c[3], c[3], n[3], False)
        self.down4 = YoloConv(c[3], c[3], 3, 2)
        self.out5 = C2f(c[3] + c[4], c[4], n[3], False)
        levels = (c[2], c[3], c[4])
        box_width, class_width = max(16, levels[0] // 4, 4 * reg_max), max(levels[0], min(num_classes, 100))
        self.box = nn.ModuleList(nn.Sequential(YoloConv(ch, box_width, 3), YoloConv(box_width, box_width, 3),
                                               nn.Conv2d(box_width, 4 * reg_max, 1)) for ch in levels)
        self.cls = nn.ModuleList(nn.Sequential(YoloConv(ch, class_width, 3), YoloConv(class_width, class_width, 3),
                                               nn.Conv2d(class_width, num_classes, 1)) for ch in levels)
        self.register_buffer("bins", torch.arange(reg_max, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        t4 = self.top4(torch.cat([self.up(p5), p4], 1))
        o3 = self.top3(torch.cat([self.up(t4), p3], 1))
        o4 = self.out4(torch.cat([self.down3(o3), t4], 1))
        o5 = self.out5(torch.cat([self.down4(o4), p5], 1))
        heads = [torch.cat([box(level), cls(level)], 1) for level, box, cls in zip((o3, o4, o5), self.box, self.cls)]
        if not self.decode:
            return tuple(heads)
        return self._decode(heads)

    def _decode(self, heads: list[torch.Tensor]) -> torch.Tensor:
        """DFL (softmax over reg_max bins, expectation) -> distances to each anchor's box sides
        -> xywh in input pixels, beside sigmoid class scores: [N, 4 + classes, anchors]."""
        batch = heads[0].shape[0]
        flat = torch.cat([head.flatten(2) for head in heads], 2)
        distances, scores = flat.split((4 * self.reg_max, self.num_classes), 1)
        distances = distances.view(batch, 4, self.reg_max, -1).softmax(2)
        distances = (distances * self.bins.view(1, 1, -1, 1)).sum(2)
        anchors, strides = [], []
        for head, stride in zip(heads, self.strides):
            height, width = head.shape[2:]
            ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32) + 0.5,
                                    torch.arange(width, dtype=torch.float32) + 0.5, indexing="ij")
            anchors.append(torch.stack([xs.flatten(), ys.flatten()]))
            strides.append(torch.full((height * width,), float(stride)))
        centre, stride = torch.cat(anchors, 1), torch.cat(strides)
        left_top, right_bottom = distances.split((2, 2), 1)
        xy = (centre + (right_bottom - left_top) / 2) * stride
        wh = (left_top + right_bottom) * stride
        return torch.cat([xy, wh, scores.sigmoid()], 1)


def yolo_v8(num_classes: int = 80, width: float = 0.25, depth: float = 0.33, decode: bool = True) -> YoloV8:
    """YOLOv8n at the defaults (3.16M params at 80 classes, like ultralytics' yolov8n.yaml)."""
    return YoloV8(num_classes, width, depth, decode=decode)


# ---------------------------------------------------------------- test configurations


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "resnet50": lambda: resnet50(num_classes=10, width=8),
    "resnet18": lambda: resnet18(num_classes=10, width=8),
    "mobilenet_v2": lambda: mobilenet_v2(num_classes=10, width_mult=0.25),
    "se_net": lambda: se_net(num_classes=10, width=8),
    "inception_net": lambda: inception_net(num_classes=10, width=8),
    "densenet": lambda: densenet(num_classes=10, growth=8),
    "vgg_net": lambda: vgg_net(num_classes=10, width=8),
    "shufflenet": lambda: shufflenet(num_classes=10, width=8),
    "convnext": lambda: ConvNeXt(num_classes=10),
}
"""Tiny configurations of every classifier architecture; all accept TEST_INPUT_SHAPE and give
(batch, 10) logits."""

DETECTORS: dict[str, Callable[[], nn.Module]] = {
    "yolo_v8": lambda: yolo_v8(num_classes=6, width=0.125),
    "yolo_v8_heads": lambda: yolo_v8(num_classes=6, width=0.125, decode=False),
}
"""Tiny YOLOv8-style detectors (accept TEST_INPUT_SHAPE): one decoded output [N, 10, 21], or the
three raw head outputs [N, 70, 4, 4], [N, 70, 2, 2], [N, 70, 1, 1]. Kept apart from BUILDERS,
whose tests expect classifier logits."""


def randomize_bn(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running stats and affine params, and every LayerNorm
    affine params (in place), so that folding and channel slicing errors change the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                shape = m.running_mean.shape
                m.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(shape, generator=generator) * 0.1)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
    return module


def build(name: str, seed: int = 0) -> nn.Module:
    """The test configuration `name` with seeded weights and randomized BatchNorm, in eval mode:
    the same call gives the same module in every process."""
    known = {**BUILDERS, **DETECTORS}
    if name not in known:
        raise KeyError(f"unknown builder '{name}'; known: {', '.join(known)}")
    torch.manual_seed(seed)
    return randomize_bn(known[name](), seed).eval()


def example_input(batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A seeded random input of TEST_INPUT_SHAPE with the given batch size."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *TEST_INPUT_SHAPE[1:]), generator=generator)
