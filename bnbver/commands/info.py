"""``bnbver info NET``: print a network's layers, shapes and neuron counts."""

from __future__ import annotations

import argparse

from bnbver.io.loaders import load_network
from bnbver.network import Add, Concat, Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``info``."""
    parser.add_argument("net", help="network file (.onnx or .nnet)")


def describe(network: Network) -> list[str]:
    """Return one human-readable line per layer plus a summary line (in a DAG each line also
    names the layers it reads: ``<- [2, 5]``, -1 being the input)."""
    lines = [f"input  shape {tuple(network.input_shape)} ({network.input_size} values)"]
    sizes = network.sizes
    relu_index = 0
    for i, layer in enumerate(network.layers):
        n_in, n_out = sizes[i], sizes[i + 1]
        if isinstance(layer, Dense):
            text = f"Dense      {n_in} -> {n_out}"
        elif isinstance(layer, Conv2d):
            k = layer.weight.shape[2:]
            text = (f"Conv2d     {layer.in_shape} -> {layer.out_shape} kernel {tuple(k)} "
                    f"stride {layer.stride} padding {layer.padding}")
        elif isinstance(layer, MaxPool2d):
            text = f"MaxPool2d  {layer.in_shape} -> {layer.out_shape} kernel {layer.kernel}"
        elif isinstance(layer, ReLU):
            text = f"ReLU       {layer.size} neurons (ReLU layer {relu_index})"
            relu_index += 1
        elif isinstance(layer, Flatten):
            text = f"Flatten    {n_in}"
        elif isinstance(layer, Add):
            text = f"Add        {len(network.inputs[i])} x {layer.size}"
        elif isinstance(layer, Concat):
            text = f"Concat     {' + '.join(str(n) for n in layer.sizes)} -> {layer.size}"
        if not network.is_chain:
            text = f"{text}  <- {list(network.inputs[i])}"
        lines.append(f"[{i:2d}] {text}")
    lines.append(f"output {network.num_outputs} values; {len(network.relu_sizes)} ReLU layers, "
                 f"{sum(network.relu_sizes)} ReLU neurons")
    return lines


def run(args: argparse.Namespace) -> int:
    """Print the description of ``args.net``."""
    for line in describe(load_network(args.net)):
        print(line)
    return 0
