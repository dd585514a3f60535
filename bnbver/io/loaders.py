"""Load a network or a property file by its extension, with user-facing errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bnbver.errors import InputError
from bnbver.network import Network
from bnbver.spec import Property, validate_property

#: file extensions read as torch models (``torch.save`` of a module or a state dict)
TORCH_SUFFIXES = (".pt", ".pth")


def load_model(path: str | Path, factory: str | None = None) -> Any:
    """Load a network file: ONNX / .nnet as a Network, .pt / .pth as a torch module.

    Args:
        path: the model file.
        factory: ``module:function`` building the module of a state dict (torch files).

    Returns:
        A :class:`Network`, or an ``nn.Module`` in evaluation mode (which
        ``bnbver.driver.as_network`` converts once the input shape is known).

    Raises:
        InputError: the file is missing, has an unknown extension or does not load.
    """
    if Path(path).suffix.lower() in TORCH_SUFFIXES:
        from bnbver.io.torch_loader import load_torch_model

        return load_torch_model(path, factory)
    return load_network(path)


def load_network(path: str | Path) -> Network:
    """Load an ONNX (``.onnx``) or ACAS Xu (``.nnet``) network.

    Raises:
        InputError: the file is missing, has an unknown extension or does not load.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(str(path), "no such file")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        from bnbver.io.onnx import load_onnx

        return load_onnx(p)
    if suffix == ".nnet":
        from bnbver.io.nnet import load_nnet

        return load_nnet(p)
    raise InputError(str(path), f"unknown network format '{suffix}' (expected .onnx or .nnet"
                     f"{', or .pt/.pth for a torch model' if suffix in TORCH_SUFFIXES else ''})")


def load_properties(path: str | Path, network: Network) -> list[Property]:
    """Parse a VNN-LIB file and check that it fits ``network``.

    Raises:
        InputError: the file is missing, malformed, or its sizes differ from the network's.
    """
    from bnbver.io.vnnlib import parse_vnnlib

    if not Path(path).is_file():
        raise InputError(str(path), "no such file")
    props = parse_vnnlib(path)
    if not props:
        raise InputError(str(path), "the property asserts nothing")
    for prop in props:
        validate_property(prop, network.input_size, network.num_outputs, str(path))
    return props
