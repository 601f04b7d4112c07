"""What a forward pass runs, as a latency table sees it: every Conv2d / Linear
as a hashable ``LayerConfig`` (with whether a BatchNorm and a ReLU-like
activation fold into it, as the ONNX exporter and ONNX Runtime fold them), and
everything else that costs time (residual additions, pooling, concatenations,
standalone activations) as ``OtherOp`` rows with their output sizes.

One traced forward pass at batch 1 on zeros, in eval mode: module forward
hooks name the convolutions and linear layers, and a ``TorchFunctionMode``
sees every tensor operation in execution order, functional ones included
(``out + shortcut``, ``F.relu``), with which tensor feeds which.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from .complexity import conv_macs

# activations ONNX Runtime fuses into a preceding Conv (FusedConv: Relu, Clip, LeakyRelu, Sigmoid, Tanh,
# HardSigmoid); torch's ReLU6 reaches us as hardtanh
_ACTIVATIONS = {"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "sigmoid",
                "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip", "clip_", "hardsigmoid"}
_BATCHNORM = {"batch_norm"}
# no work at run time once exported (views, dropout in eval mode, copies ORT elides)
_FREE = {"flatten", "view", "reshape", "contiguous", "dropout", "squeeze", "unsqueeze", "clone", "detach",
         "__get__", "size", "dim", "numel", "identity", "to", "float", "type_as", "view_as", "reshape_as"}


@dataclass(frozen=True)
class LayerConfig:
    """One convolution or linear layer at deployment: hashable (a latency
    table's key) and JSON-serialisable (``to_dict`` / ``from_dict``).

    ``in_hw`` is the input's spatial size (H, W); a linear layer on a (N, F)
    input has ``in_hw = (1, 1)`` and unit kernel/stride/dilation. ``bias`` is
    true when the exported layer adds a bias (its own, or a BatchNorm folded
    into it); ``act`` when a ReLU-like activation follows and fuses into it.
    """

    kind: str                              # "conv" or "linear"
    in_channels: int
    out_channels: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)     # symmetric zero padding (top=bottom, left=right)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    in_hw: tuple[int, int] = (1, 1)
    bias: bool = False
    act: bool = False

    def __post_init__(self):
        if self.kind not in ("conv", "linear"):
            raise ValueError(f"LayerConfig kind must be 'conv' or 'linear', got {self.kind!r}")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{self.in_channels}->{self.out_channels} channels do not split into "
                             f"{self.groups} groups")
        for f in ("kernel", "stride", "padding", "dilation", "in_hw"):   # lists from JSON -> tuples
            object.__setattr__(self, f, tuple(int(v) for v in getattr(self, f)))

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output spatial size (H, W), as torch computes it."""
        return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in
                     zip(self.in_hw, self.kernel, self.stride, self.padding, self.dilation))

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    @property
    def key(self) -> str:
        """Canonical text form, e.g. ``conv 16>32 k3x3 s2x2 p1x1 d1x1 g1 @28x28 +b +act``."""
        xy = lambda t: f"{t[0]}x{t[1]}"   # noqa: E731
        return (f"{self.kind} {self.in_channels}>{self.out_channels} k{xy(self.kernel)} s{xy(self.stride)} "
                f"p{xy(self.padding)} d{xy(self.dilation)} g{self.groups} @{xy(self.in_hw)}"
                + (" +b" if self.bias else "") + (" +act" if self.act else ""))

    def macs(self) -> int:
        """Multiply-accumulates of one image (``complexity.conv_macs``, the one definition)."""
        return conv_macs((self.out_channels, *self.out_hw), self.in_channels, self.groups, self.kernel)

    def with_widths(self, in_channels: int | None = None, out_channels: int | None = None) -> LayerConfig:
        """The same layer with other channel counts; a depthwise layer keeps
        ``groups == in == out`` (``out_channels`` wins if both are given)."""
        cin = self.in_channels if in_channels is None else int(in_channels)
        cout = self.out_channels if out_channels is None else int(out_channels)
        if self.depthwise:
            w = cout if out_channels is not None else cin
            return replace(self, in_channels=w, out_channels=w, groups=w)
        if self.groups > 1 and (cin % self.groups or cout % self.groups):
            raise ValueError(f"grouped layer {self.key}: {cin}->{cout} channels do not split into "
                             f"{self.groups} groups")
        return replace(self, in_channels=cin, out_channels=cout)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> LayerConfig:
        return cls(**d)


@dataclass
class OtherOp:
    """A traced operation that is neither a Conv2d / Linear nor folded into one."""

    op: str                 # torch function name, e.g. "__add__", "max_pool2d", "cat"
    out_elements: int       # elements of its output for one image


@dataclass
class ModelProfile:
    """The layers and the other operations of one forward pass."""

    layers: list[tuple[str, LayerConfig]] = field(default_factory=list)
    others: list[OtherOp] = field(default_factory=list)

    @property
    def other_elements(self) -> int:
        """Output elements of the non-layer operations, per image."""
        return sum(o.out_elements for o in self.others)


def _conv_padding(m: nn.Conv2d) -> tuple[int, int]:
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return (0, 0)
        total = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
        if any(t % 2 for t in total):
            raise ValueError(f"padding='same' with an even effective kernel {m.kernel_size} is asymmetric; "
                             "a latency table models symmetric padding only: pad explicitly (nn.ZeroPad2d)")
        return tuple(t // 2 for t in total)
    return tuple(m.padding)


def _config(m: nn.Module, x: torch.Tensor) -> LayerConfig:
    if isinstance(m, nn.Conv2d):                                          # x: (1, C, H, W)
        return LayerConfig("conv", m.in_channels, m.out_channels, m.kernel_size, m.stride, _conv_padding(m),
                           m.dilation, m.groups, tuple(x.shape[-2:]), m.bias is not None)
    rows = 1                                                             # x: (1, F) or (1, ..., F)
    for n in x.shape[1:-1]:                                              # (shapes only: no traced tensor op)
        rows *= int(n)
    return LayerConfig("linear", m.in_features, m.out_features, in_hw=(rows, 1), bias=m.bias is not None)


class _Recorder(TorchFunctionMode):
    """Records (function name, input tensors, output tensor) of every tensor op."""

    def __init__(self):
        super().__init__()
        self.events: list[tuple[str, list[torch.Tensor], torch.Tensor]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat = list(args) + list((kwargs or {}).values())
        ins = [a for a in flat if isinstance(a, torch.Tensor)]
        ins += [t for a in flat if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
        if isinstance(out, torch.Tensor) and ins:
            name = getattr(func, "__name__", str(func))
            self.events.append((name, ins, out))   # the tensors stay referenced: their ids stay unique
        return out


@torch.no_grad()
def model_profile(model: nn.Module, input_shape: tuple[int, ...]) -> ModelProfile:
    """The layers (in execution order) and other operations of ``model`` on a
    ``(1, *input_shape)`` input."""
    layer_of: dict[int, tuple[str, LayerConfig]] = {}       # id(output tensor) -> (name, config)
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            def hook(mod, inp, out, name=name):
                layer_of[id(out)] = (name, _config(mod, inp[0]))
            hooks.append(m.register_forward_hook(hook))
    rec = _Recorder()
    training = model.training
    model.eval()
    try:
        with rec:
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(training)
    prof = ModelProfile()
    index: dict[int, int] = {}        # id(tensor) -> index into prof.layers of the layer it comes from
    stage: dict[int, str] = {}        # ... and how far it went: "out" (raw), "bn" (BatchNorm folded), "act"
    for fname, ins, out in rec.events:
        src = id(ins[0])
        if id(out) in layer_of and fname in ("conv2d", "linear"):
            prof.layers.append(layer_of[id(out)])
            index[id(out)], stage[id(out)] = len(prof.layers) - 1, "out"
        elif fname in _BATCHNORM and stage.get(src) == "out":             # folds into the layer: a bias
            i = index[src]
            prof.layers[i] = (prof.layers[i][0], replace(prof.layers[i][1], bias=True))
            index[id(out)], stage[id(out)] = i, "bn"
        elif fname in _ACTIVATIONS and stage.get(src) in ("out", "bn"):   # fuses into the layer
            i = index[src]
            prof.layers[i] = (prof.layers[i][0], replace(prof.layers[i][1], act=True))
            index[id(out)], stage[id(out)] = i, "act"
        elif fname.strip("_") in _FREE:
            continue
        else:
            prof.others.append(OtherOp(fname, out.numel()))
    return prof


def layer_configs(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, LayerConfig]]:
    """``(module name, LayerConfig)`` of every Conv2d / Linear of ``model`` in
    execution order, on a ``(1, *input_shape)`` input (a layer run twice is
    listed twice)."""
    return model_profile(model, input_shape).layers
