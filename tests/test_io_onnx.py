"""Tests of bnbver.io.onnx (load_onnx) and bnbver.io.onnx_export (save_onnx)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bnbver.errors import InputError, UnsupportedOperatorError
from bnbver.io import onnx as onnx_loader
from bnbver.io.onnx import load_onnx
from bnbver.io.onnx_export import save_onnx
from bnbver.io.vnnlib import parse_vnnlib
from bnbver.network import Add, Concat, Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU
from tests.conftest import random_relu_net

RTOL = 1e-5
ATOL = 1e-5


def ort_forward(path: Path, x: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """Run the model one input at a time (the models fix the batch to 1); return (B, n_out)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    dtype = np.float64 if "double" in inp.type else np.float32
    outs = [sess.run(None, {inp.name: xi.astype(dtype).reshape(1, *input_shape)})[0]
            for xi in x]
    return np.stack([np.asarray(o, dtype=np.float64).reshape(-1) for o in outs])


def check_against_ort(path: Path, x: np.ndarray) -> Network:
    """Load ``path`` and assert its float64 forward matches onnxruntime on x (float32 inputs)."""
    net = load_onnx(path)
    x32 = x.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(
        net.forward(x32), ort_forward(path, x32, net.input_shape), rtol=RTOL, atol=ATOL
    )
    return net


def box_samples(vnnlib: Path, n: int, rng: np.random.Generator) -> np.ndarray:
    """Return n uniform samples from the first input box of a property file."""
    box = parse_vnnlib(vnnlib)[0].box
    return rng.uniform(box.lower, box.upper, size=(n, box.size))


def make_model(
    path: Path,
    nodes: list[onnx.NodeProto],
    inits: dict[str, np.ndarray],
    in_shape: list[int],
    out_name: str,
    out_shape: list[int] | None,
) -> Path:
    """Write a float32 model with input 'x' and the given nodes and initializers."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def f32(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(size=shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Real networks


@pytest.mark.parametrize(
    ("net", "prop", "shape"),
    [
        ("acasxu/ACASXU_run2a_1_1_batch_2000.onnx", "acasxu/prop_1.vnnlib", (1, 1, 5)),
        ("mnist_fc/mnist-net_256x2.onnx", "mnist_fc/prop_0_0.03.vnnlib", (784, 1)),
    ],
)
def test_bundled_examples_match_onnxruntime(
    examples_dir: Path, net: str, prop: str, shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(0)
    x = box_samples(examples_dir / prop, 100, rng)
    loaded = check_against_ort(examples_dir / net, x)
    assert loaded.input_shape == shape
    assert loaded.num_outputs == loaded.output_shape[0]


def _instances(bench: Path) -> dict[str, str]:
    """Map each network (relative path) to the first property it is paired with."""
    out: dict[str, str] = {}
    with open(bench / "instances.csv") as fh:
        for row in csv.reader(fh):
            out.setdefault(row[0], row[1])
    return out


@pytest.mark.parametrize(("suite", "n_samples"), [("acasxu", 100), ("mnist_fc", 100),
                                                   ("oval21", 10)])
def test_every_benchmark_network_matches_onnxruntime(
    benchmarks_dir: Path, suite: str, n_samples: int
) -> None:
    bench = benchmarks_dir / suite
    pairs = _instances(bench)
    assert len(pairs) == len(list((bench / "onnx").glob("*.onnx")))
    rng = np.random.default_rng(1)
    for net, prop in pairs.items():
        check_against_ort(bench / net, box_samples(bench / prop, n_samples, rng))


def test_benchmark_shapes_and_layers(benchmarks_dir: Path) -> None:
    acas = load_onnx(benchmarks_dir / "acasxu/onnx/ACASXU_run2a_5_9_batch_2000.onnx")
    assert acas.input_shape == (1, 1, 5) and acas.output_shape == (5,)
    assert acas.relu_sizes == [50] * 6
    assert all(isinstance(layer, (Dense, ReLU)) for layer in acas.layers)
    oval = load_onnx(benchmarks_dir / "oval21/onnx/cifar_deep_kw.onnx")
    assert oval.input_shape == (3, 32, 32) and oval.output_shape == (10,)
    kinds = [type(layer).__name__ for layer in oval.layers]
    assert kinds.count("Conv2d") == 4 and kinds.count("Flatten") == 1


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("op", ["Sigmoid", "Softmax"])
def test_unsupported_operator_names_op_and_node(tmp_path: Path, op: str) -> None:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], name="fc", transB=1),
             helper.make_node(op, ["h"], ["y"], name="act_node")]
    path = make_model(tmp_path / "m.onnx", nodes, {"W": f32(rng, 3, 4), "b": f32(rng, 3)},
                      [1, 4], "y", [1, 3])
    with pytest.raises(UnsupportedOperatorError, match=f"unsupported operator '{op}' in node "
                                                       "'act_node'"):
        load_onnx(path)


def test_malformed_bytes_raise_input_error(tmp_path: Path, examples_dir: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf \xff\x00\x12")
    with pytest.raises(InputError, match="not a valid ONNX model"):
        load_onnx(garbage)
    truncated = tmp_path / "truncated.onnx"
    data = (examples_dir / "mnist_fc/mnist-net_256x2.onnx").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a valid ONNX model"):
        load_onnx(truncated)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="not a valid ONNX model"):
        load_onnx(empty)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_onnx(tmp_path / "absent.onnx")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_weights_raise_input_error(tmp_path: Path, bad: float) -> None:
    w = np.ones((3, 4), dtype=np.float32)
    w[1, 2] = bad
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="fc", transB=1)]
    path = make_model(tmp_path / "m.onnx", nodes, {"W": w, "b": np.zeros(3, np.float32)},
                      [1, 4], "y", [1, 3])
    with pytest.raises(InputError, match="NaN or infinite weights in 'W'"):
        load_onnx(path)


def test_issue_19_residual_graph_matches_onnxruntime(tmp_path: Path) -> None:
    """A graph that is not a chain (a tensor read twice, joined by Add) loads as a DAG."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], name="fc", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "h"], ["y"], name="residual")]
    path = make_model(tmp_path / "m.onnx", nodes, {"W": f32(rng, 4, 4), "b": f32(rng, 4)},
                      [1, 4], "y", [1, 4])
    net = check_against_ort(path, rng.normal(size=(20, 4)))
    assert not net.is_chain
    assert [type(layer) for layer in net.layers] == [Dense, ReLU, Add]
    assert net.inputs == ((-1,), (0,), (1, 0))


def test_issue_19_grouped_conv_matches_onnxruntime(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "W", "b"], ["y"], name="gconv", group=2,
                              pads=[1, 1, 1, 1], strides=[2, 1])]
    path = make_model(tmp_path / "m.onnx", nodes, {"W": f32(rng, 4, 1, 3, 3),
                                                   "b": f32(rng, 4)},
                      [1, 2, 5, 5], "y", None)
    net = check_against_ort(path, rng.normal(size=(10, 50)))
    w = net.layers[0].weight  # block diagonal: output channels 0-1 read input channel 0 only
    assert isinstance(net.layers[0], Conv2d) and w.shape == (4, 2, 3, 3)
    assert not w[:2, 1].any() and not w[2:, 0].any()


# ---------------------------------------------------------------------------------------------
# Folding of elementwise maps, hand-built models checked against onnxruntime


def test_sub_div_normalisation_folds_into_gemm(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Sub", ["x", "mean"], ["a"]),
             helper.make_node("Div", ["a", "std"], ["b"]),
             helper.make_node("Gemm", ["b", "W1", "b1"], ["h"], transB=1, alpha=0.5, beta=2.0),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["m"]),
             helper.make_node("Add", ["m", "b2"], ["y"])]
    inits = {"mean": f32(rng, 1, 4), "std": np.abs(f32(rng, 4)) + 0.5, "W1": f32(rng, 6, 4),
             "b1": f32(rng, 6), "W2": f32(rng, 6, 3), "b2": f32(rng, 3)}
    path = make_model(tmp_path / "m.onnx", nodes, inits, [1, 4], "y", [1, 3])
    net = check_against_ort(path, rng.normal(size=(50, 4)) * 3)
    assert [type(layer) for layer in net.layers] == [Dense, ReLU, Dense]


def test_gemm_without_transb_and_constant_node(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    w = f32(rng, 4, 3)
    nodes = [helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(w, "W")),
             helper.make_node("Identity", ["x"], ["i"]),
             helper.make_node("Gemm", ["i", "W"], ["g"]),
             helper.make_node("Mul", ["g", "s"], ["y"])]
    path = make_model(tmp_path / "m.onnx", nodes, {"s": f32(rng, 3)}, [1, 4], "y", [1, 3])
    net = check_against_ort(path, rng.normal(size=(20, 4)))
    assert len(net.layers) == 1


def _conv_model(tmp_path: Path, rng: np.random.Generator, pads: list[int], mean: np.ndarray
                ) -> Path:
    """Input normalisation (per channel), Conv, BatchNorm, Relu, MaxPool, Flatten, Gemm."""
    nodes = [helper.make_node("Sub", ["x", "mean"], ["a"]),
             helper.make_node("Div", ["a", "std"], ["b"]),
             helper.make_node("Conv", ["b", "W", "cb"], ["c"], pads=pads, strides=[1, 2]),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "m", "v"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], pads=[0, 0, 1, 1]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "W2", "b2"], ["y"], transB=1)]
    h = (6 + pads[0] + pads[2] - 3) + 1
    w = (7 + pads[1] + pads[3] - 3) // 2 + 1
    n_flat = 3 * ((h + 1 - 2) + 1) * ((w + 1 - 2) + 1)
    inits = {"mean": mean, "std": np.array([0.5, 2.0], np.float32).reshape(1, 2, 1, 1),
             "W": f32(rng, 3, 2, 3, 3), "cb": f32(rng, 3), "g": f32(rng, 3), "beta": f32(rng, 3),
             "m": f32(rng, 3), "v": np.abs(f32(rng, 3)) + 0.1, "W2": f32(rng, 4, n_flat),
             "b2": f32(rng, 4)}
    return make_model(tmp_path / "conv.onnx", nodes, inits, [1, 2, 6, 7], "y", [1, 4])


def test_normalisation_folds_exactly_into_unpadded_conv(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    mean = np.array([0.3, -0.2], np.float32).reshape(1, 2, 1, 1)
    path = _conv_model(tmp_path, rng, [0, 0, 0, 0], mean)
    net = check_against_ort(path, rng.normal(size=(30, 84)))
    assert isinstance(net.layers[0], Conv2d)
    assert [type(layer) for layer in net.layers[1:4]] == [ReLU, MaxPool2d, Flatten]


def test_shift_before_padded_conv_uses_a_channel_layer(tmp_path: Path) -> None:
    """A per-channel normalisation that cannot fold into a padded conv becomes a 1 x 1
    convolution of its own (any size); with std a power of 2 it is exact."""
    rng = np.random.default_rng(5)
    mean = np.array([0.3, -0.2], np.float32).reshape(1, 2, 1, 1)
    path = _conv_model(tmp_path, rng, [1, 0, 2, 1], mean)
    net = check_against_ort(path, rng.normal(size=(30, 84)))
    first = net.layers[0]
    assert isinstance(first, Conv2d) and first.weight.shape == (2, 2, 1, 1)
    assert isinstance(net.layers[1], Conv2d)
    assert first.weight_err == 0.0 and first.bias_err is None
    assert net.layers[1].weight_err > 0  # the BatchNorm folded into it is rounded


def test_scale_only_folds_into_padded_conv(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    path = _conv_model(tmp_path, rng, [1, 1, 1, 1], np.zeros((1, 2, 1, 1), np.float32))
    net = check_against_ort(path, rng.normal(size=(30, 84)))
    assert isinstance(net.layers[0], Conv2d)


def test_unfoldable_map_over_max_diagonal_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A map that varies within a channel cannot be a 1 x 1 convolution."""
    rng = np.random.default_rng(5)
    mean = rng.normal(size=(1, 2, 6, 7)).astype(np.float32)
    path = _conv_model(tmp_path, rng, [1, 1, 1, 1], mean)
    monkeypatch.setattr(onnx_loader, "MAX_DIAGONAL", 10)
    with pytest.raises(UnsupportedOperatorError, match="cannot fold"):
        load_onnx(path)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_conv_and_pool_auto_pad(tmp_path: Path, auto_pad: str) -> None:
    rng = np.random.default_rng(10)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], auto_pad=auto_pad, strides=[2, 2]),
             helper.make_node("MaxPool", ["c"], ["y"], auto_pad=auto_pad, kernel_shape=[2, 3])]
    path = make_model(tmp_path / "m.onnx", nodes, {"W": f32(rng, 2, 1, 4, 4)}, [1, 1, 9, 8],
                      "y", None)
    net = check_against_ort(path, rng.normal(size=(10, 72)))
    assert isinstance(net.layers[0], Conv2d)


def test_reshape_keeps_batch(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "b"], ["y"], transB=1)]
    inits = {"shape": np.array([-1, 12], np.int64), "W": f32(rng, 2, 12), "b": f32(rng, 2)}
    path = make_model(tmp_path / "m.onnx", nodes, inits, [1, 3, 2, 2], "y", [1, 2])
    net = check_against_ort(path, rng.normal(size=(10, 12)))
    assert net.input_shape == (3, 2, 2)


# ---------------------------------------------------------------------------------------------
# save_onnx round trips


def _conv_net(rng: np.random.Generator) -> Network:
    conv = Conv2d(rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4), (2, 1), (1, 0, 2, 1),
                  (2, 8, 7))
    pool = MaxPool2d((2, 2), (2, 2), (0, 1, 1, 0), conv.out_shape)
    n = pool.out_size
    return Network(
        (conv, ReLU(conv.out_size), pool, Flatten(n), Dense(rng.normal(size=(5, n)),
                                                            rng.normal(size=5)),
         ReLU(5), Dense(rng.normal(size=(3, 5)), rng.normal(size=3))),
        (2, 8, 7),
    )


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_save_onnx_round_trip(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(8)
    net = random_relu_net(rng, [6, 10, 8, 3]) if kind == "dense" else _conv_net(rng)
    x = rng.normal(size=(20, net.input_size))
    path = tmp_path / "net.onnx"
    save_onnx(net, path, dtype="float64")
    if kind == "dense":  # onnxruntime's CPU Conv has no float64 kernel
        np.testing.assert_allclose(ort_forward(path, x, net.input_shape), net.forward(x),
                                   rtol=1e-10, atol=1e-10)
    back = load_onnx(path)
    assert back.input_shape == net.input_shape
    np.testing.assert_allclose(back.forward(x), net.forward(x), rtol=1e-12, atol=1e-12)
    save_onnx(net, tmp_path / "net32.onnx")
    check_against_ort(tmp_path / "net32.onnx", x)


def test_save_onnx_keeps_input_shape(tmp_path: Path, examples_dir: Path) -> None:
    net = load_onnx(examples_dir / "acasxu/ACASXU_run2a_1_1_batch_2000.onnx")
    save_onnx(net, tmp_path / "acas.onnx")
    x = np.random.default_rng(9).uniform(-0.5, 0.5, size=(10, 5))
    back = check_against_ort(tmp_path / "acas.onnx", x)
    assert back.input_shape == (1, 1, 5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("fold", [True, False])
def test_issue_18_torch_onnx_export_with_batchnorm_pooling_identity(tmp_path: Path,
                                                                    fold: bool) -> None:
    """``torch.onnx.export`` writes ``BatchNormalization`` and ``AveragePool`` nodes, and an
    ``Identity`` node for each initializer equal to an earlier one (here the default
    weights and biases of two BatchNorm1d): the loader matches onnxruntime on them."""
    import torch

    from tests.test_io_torch import bn_pool_model

    model = bn_pool_model().float()
    with torch.no_grad():
        for k in (13, 15):  # the two BatchNorm1d(8): default affine parameters, equal
            model[k].weight.fill_(1.0)
            model[k].bias.fill_(0.0)
    path = tmp_path / "bn.onnx"
    torch.onnx.export(model, (torch.zeros(1, 2, 8, 8),), str(path), dynamo=False,
                      do_constant_folding=fold)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert {"Identity", "BatchNormalization", "AveragePool"} <= set(ops), ops
    check_against_ort(path, np.random.default_rng(8).normal(size=(12, 128)))


def test_issue_18_global_average_pool_and_identity_of_constants(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    nodes = [helper.make_node("Identity", ["W0"], ["W"]),
             helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Dropout", ["r"], ["d"]),
             helper.make_node("AveragePool", ["d"], ["p"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], count_include_pad=1),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "W2"], ["y"], transB=1)]
    path = make_model(tmp_path / "gap.onnx", nodes, {"W0": f32(rng, 3, 2, 3, 3),
                                                     "W2": f32(rng, 4, 3)},
                      [1, 2, 5, 6], "y", [1, 4])
    net = check_against_ort(path, rng.normal(size=(10, 60)))
    assert [type(layer) for layer in net.layers] == [Conv2d, ReLU, Conv2d, Conv2d, Dense]


def test_issue_18_average_pool_without_padding_in_the_divisor_is_refused(
        tmp_path: Path) -> None:
    nodes = [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2],
                              pads=[1, 1, 1, 1], name="avg")]
    path = make_model(tmp_path / "avg.onnx", nodes, {}, [1, 1, 4, 4], "y", None)
    with pytest.raises(UnsupportedOperatorError, match="AveragePool.*'avg'.*count_include_pad"):
        load_onnx(path)


# ---------------------------------------------------------------------------------------------
# Graphs (issue 19)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("fold", [True, False])
def test_issue_19_torch_exported_resnet_matches_onnxruntime(tmp_path: Path, fold: bool) -> None:
    """``torch.onnx.export`` of a ResNet (BatchNorm, identity and projection shortcuts, input
    normalisation, ``x.view(x.size(0), -1)``; without constant folding the view is a
    Shape/Gather/Unsqueeze/Concat/Reshape chain that the reader folds)."""
    import torch

    from tests.graph_cases import tiny_resnet

    model = tiny_resnet(seed=1)
    path = tmp_path / "resnet.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False,
                      do_constant_folding=fold)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert "Add" in ops and ("BatchNormalization" in ops or fold)
    net = check_against_ort(path, np.random.default_rng(9).uniform(0, 1, size=(8, 192)))
    assert not net.is_chain
    assert sum(isinstance(layer, Add) for layer in net.layers) == 2
    # 6 convolutions and the input normalisation (a 1 x 1 convolution: the stem pads); the
    # BatchNorms are folded into the convolutions before them, with their rounding recorded
    convs = [layer for layer in net.layers if isinstance(layer, Conv2d)]
    assert len(convs) == 7 and (fold or sum(c.weight_err > 0 for c in convs) == 5)


def test_issue_19_concat_sum_and_difference_of_activations(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    nodes = [helper.make_node("Conv", ["x", "W1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ra"]),
             helper.make_node("Conv", ["x", "W2"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["ra", "b"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "W3"], ["c"]),
             helper.make_node("Sub", ["c", "ra"], ["d"]),
             helper.make_node("Sum", ["d", "c", "b"], ["s"]),
             helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "W4"], ["y"], transB=1)]
    inits = {"W1": f32(rng, 2, 1, 3, 3), "W2": f32(rng, 2, 1, 3, 3), "W3": f32(rng, 2, 4, 1, 1),
             "W4": f32(rng, 3, 2 * 4 * 4)}
    path = make_model(tmp_path / "cat.onnx", nodes, inits, [1, 1, 4, 4], "y", [1, 3])
    net = check_against_ort(path, rng.normal(size=(12, 16)))
    kinds = [type(layer) for layer in net.layers]
    assert Concat in kinds and kinds.count(Add) == 2


def test_issue_19_residual_output_and_unsupported_join(tmp_path: Path) -> None:
    """A network may end in a join; a product of two activations is refused by name."""
    rng = np.random.default_rng(14)
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Add", ["x", "r"], ["y"])]
    path = make_model(tmp_path / "end.onnx", nodes, {"W": f32(rng, 3, 3)}, [1, 3], "y", [1, 3])
    net = check_against_ort(path, rng.normal(size=(10, 3)))
    assert isinstance(net.layers[-1], Add)
    nodes[2] = helper.make_node("Mul", ["x", "r"], ["y"], name="gate")
    path = make_model(tmp_path / "mul.onnx", nodes, {"W": f32(rng, 3, 3)}, [1, 3], "y", [1, 3])
    with pytest.raises(UnsupportedOperatorError, match="'Mul' in node 'gate'.*two activations"):
        load_onnx(path)


@pytest.mark.slow
def test_issue_19_sri_resnet_matches_onnxruntime(benchmarks_dir: Path) -> None:
    bench = benchmarks_dir / "sri_resnet_a"
    net, prop = next(iter(_instances(bench).items()))
    loaded = check_against_ort(bench / net, box_samples(bench / prop, 5,
                                                        np.random.default_rng(2)))
    assert not loaded.is_chain and loaded.relu_sizes == [4096, 2048, 2048, 1024, 1024, 512,
                                                         512, 100]


def test_issue_19_save_onnx_round_trip_of_a_dag(tmp_path: Path) -> None:
    from tests.graph_cases import conv_resnet, residual_net

    rng = np.random.default_rng(15)
    for net in (residual_net(rng, shortcut="projection"), residual_net(rng, shortcut="concat"),
                conv_resnet(rng, channels=2, size=4)):
        x = rng.normal(size=(10, net.input_size))
        save_onnx(net, tmp_path / "dag.onnx")
        back = check_against_ort(tmp_path / "dag.onnx", x)
        assert not back.is_chain
        np.testing.assert_allclose(back.forward(x), net.forward(x), rtol=1e-5, atol=1e-5)


def test_issue_19_map_after_a_shared_tensor_is_not_folded_into_its_producer(
        tmp_path: Path) -> None:
    """``c = conv(x)`` feeds a BatchNorm and the residual sum: folding the BatchNorm into the
    conv would scale the sum's other input too, so it becomes a layer of its own; a map on a
    shared tensor folds into each affine reader instead."""
    rng = np.random.default_rng(16)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "m", "v"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("Add", ["r", "c"], ["s"]),
             helper.make_node("Mul", ["s", "k"], ["t"]),
             helper.make_node("Conv", ["t", "W2"], ["u"]),
             helper.make_node("Conv", ["t", "W3"], ["w"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["u", "w"], ["y"])]
    inits = {"W": f32(rng, 2, 1, 3, 3), "g": f32(rng, 2), "beta": f32(rng, 2),
             "m": f32(rng, 2), "v": np.abs(f32(rng, 2)) + 0.1,
             "k": np.array([0.5, -3.0], np.float32).reshape(1, 2, 1, 1),
             "W2": f32(rng, 2, 2, 1, 1), "W3": f32(rng, 2, 2, 3, 3)}
    path = make_model(tmp_path / "shared.onnx", nodes, inits, [1, 1, 5, 5], "y", None)
    net = check_against_ort(path, rng.normal(size=(10, 25)))
    kinds = [type(layer).__name__ for layer in net.layers]
    # conv, the BatchNorm as a 1x1 conv, ReLU, Add; the Mul (a scale) folds into both convs
    # that read the sum, then their Add
    assert kinds == ["Conv2d", "Conv2d", "ReLU", "Add", "Conv2d", "Conv2d", "Add"]
    assert net.inputs[3] == (2, 0) and net.inputs[4] == net.inputs[5] == (3,)
