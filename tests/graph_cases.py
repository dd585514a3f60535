"""DAG networks shared by the graph tests: residual blocks in the IR and in torch.

- :func:`residual_net`: a dense residual network (identity or projection shortcuts, or a
  concatenation), small enough for the activation-pattern oracle;
- :func:`as_chain`: the same function written as a chain, each shortcut carried through the
  block's ReLUs as ``relu(s) - relu(-s)`` (exact for any sign);
- :func:`conv_resnet`: two 3x3 convolutions plus an identity shortcut, then a strided block
  with a 1x1 projection shortcut, on tiny images;
- :class:`TinyResNet`: a torch ResNet (BatchNorm, identity and projection shortcuts, input
  normalisation, ``view``), for the torch.fx and ONNX readers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bnbver.network import Add, Concat, Conv2d, Dense, Layer, Network, ReLU


def _dense(rng: np.random.Generator, n_out: int, n_in: int, scale: float = 1.0) -> Dense:
    return Dense(rng.normal(size=(n_out, n_in)) * scale / np.sqrt(n_in),
                 rng.normal(size=n_out) * 0.3)


def residual_net(rng: np.random.Generator, n_in: int = 3, width: int = 3, blocks: int = 1,
                 shortcut: str = "identity", n_out: int = 2) -> Network:
    """Return ``x -> D1 -> ReLU -> [block]* -> D_out``; a block is ``relu(D3 relu(D2 h) + s)``
    with ``s = h`` ("identity"), ``P h`` ("projection") or ``Q [h; D3 relu(D2 h)]``
    replacing the sum ("concat")."""
    layers: list[Layer] = []
    inputs: list[tuple[int, ...]] = []

    def add(layer: Layer, *ins: int) -> int:
        layers.append(layer)
        inputs.append(tuple(ins))
        return len(layers) - 1

    h = add(ReLU(width), add(_dense(rng, width, n_in, 2.0), -1))
    for _ in range(blocks):
        a = add(_dense(rng, width, width, 1.5), add(ReLU(width), add(_dense(rng, width, width,
                                                                             1.5), h)))
        if shortcut == "identity":
            j = add(Add(width), a, h)
        elif shortcut == "projection":
            j = add(Add(width), a, add(_dense(rng, width, width, 1.5), h))
        else:
            j = add(_dense(rng, width, 2 * width, 1.5), add(Concat((width, width)), h, a))
        h = add(ReLU(width), j)
    add(_dense(rng, n_out, width, 2.0), h)
    return Network(tuple(layers), (n_in,), inputs=tuple(inputs))


def as_chain(net: Network) -> Network:
    """Return a chain computing the same function as a :func:`residual_net` with identity or
    projection shortcuts: through each block the shortcut ``s`` rides along as the pair
    ``(relu(s), relu(-s))``, and the join adds ``relu(s) - relu(-s) = s``."""
    layers = list(net.layers)
    out: list[Layer] = [layers[0], layers[1]]
    i = 2
    while i < len(layers) - 1:
        d2, d3 = layers[i], layers[i + 2]
        assert isinstance(d2, Dense) and isinstance(d3, Dense)
        n = d2.out_size
        proj = layers[i + 3] if isinstance(layers[i + 3], Dense) else None
        P = proj.weight if proj is not None else np.eye(n)
        pb = proj.bias if proj is not None else np.zeros(n)
        eye = np.eye(n)
        first = Dense(np.vstack([d2.weight, P, -P]), np.concatenate([d2.bias, pb, -pb]))
        second = Dense(np.hstack([d3.weight, eye, -eye]), d3.bias)
        out += [first, ReLU(3 * n), second, ReLU(n)]
        i += 6 if proj is not None else 5
    out.append(layers[i])
    return Network(tuple(out), net.input_shape)


def conv_resnet(rng: np.random.Generator, channels: int = 1, size: int = 3) -> Network:
    """Return a tiny conv ResNet on (1, size, size): conv stem, an identity block (two 3x3
    convolutions, padding 1), a strided block with a 1x1 projection, and a dense head."""
    c = channels
    shape = (1, size, size)

    def conv(c_in: int, c_out: int, k: int, stride: int, pad: int,
             in_shape: tuple[int, int, int]) -> Conv2d:
        w = rng.normal(size=(c_out, c_in, k, k)) / np.sqrt(c_in * k * k)
        return Conv2d(w, rng.normal(size=c_out) * 0.3, (stride, stride), (pad,) * 4, in_shape)

    stem = conv(1, c, 3, 1, 1, shape)
    s1 = stem.out_shape
    a1, a2 = conv(c, c, 3, 1, 1, s1), conv(c, c, 3, 1, 1, s1)
    b1 = conv(c, c, 3, 2, 1, s1)
    b2 = conv(c, c, 3, 1, 1, b1.out_shape)
    proj = conv(c, c, 1, 2, 0, s1)
    n = b2.out_size
    layers: tuple[Layer, ...] = (
        stem, ReLU(stem.out_size),                                   # 0, 1
        a1, ReLU(a1.out_size), a2, Add(a2.out_size), ReLU(a2.out_size),   # 2..6
        b1, ReLU(b1.out_size), b2, proj, Add(n), ReLU(n),            # 7..12
        _dense(rng, 2, n, 2.0))                                      # 13
    inputs = ((-1,), (0,), (1,), (2,), (3,), (4, 1), (5,), (6,), (7,), (8,), (6,), (9, 10),
              (11,), (12,))
    return Network(layers, shape, inputs=inputs)


class _Block(nn.Module):
    """A ResNet basic block (conv-BN-ReLU-conv-BN plus shortcut, then ReLU)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(c_out)
        self.c2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(c_out)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                       nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.b1(self.c1(x)))
        out = self.b2(self.c2(out))
        return torch.relu(out + self.short(x))


class TinyResNet(nn.Module):
    """Input normalisation, a conv stem, an identity and a projection block, a dense head."""

    def __init__(self, channels: int = 4, size: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, 1, 1)
        self.l1 = _Block(channels, channels, 1)
        self.l2 = _Block(channels, 2 * channels, 2)
        self.fc = nn.Linear(2 * channels * (size // 2) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.5) / 0.25
        x = torch.relu(self.stem(x))
        x = self.l2(self.l1(x))
        return self.fc(x.view(x.size(0), -1))


def tiny_resnet(seed: int = 0, channels: int = 4, size: int = 8) -> TinyResNet:
    """Return a :class:`TinyResNet` in evaluation mode with random BatchNorm statistics."""
    torch.manual_seed(seed)
    model = TinyResNet(channels, size)
    gen = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            mod.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                mod.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                mod.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return model.eval()
