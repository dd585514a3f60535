"""Data sets for certification: npz, CSV (label column or first), MNIST idx; label checks."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from bnbver.errors import InputError
from bnbver.io.datasets import labels_as_int, load_dataset

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "data"


def test_npz_keeps_sample_shape_and_selects_indices(tmp_path: Path) -> None:
    x = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 3, 4]))
    data = load_dataset(tmp_path / "d.npz", indices=[3, 1, 4], limit=2)
    assert data.x.shape == (2, 2, 3) and data.x.dtype == np.float64
    np.testing.assert_array_equal(data.x, x[[3, 1]])
    assert data.y.tolist() == [3, 1] and data.indices.tolist() == [3, 1]


def test_csv_with_a_label_column_or_label_first(tmp_path: Path) -> None:
    named = tmp_path / "named.csv"
    named.write_text("a,b,label\n0.5,0.25,1\n1,0,0\n")
    data = load_dataset(named)
    np.testing.assert_array_equal(data.x, [[0.5, 0.25], [1.0, 0.0]])
    assert data.y.tolist() == [1, 0]
    eran = tmp_path / "eran.csv"
    eran.write_text("7,0,255,51\n2,255,0,0\n")  # label, then pixels 0..255
    data = load_dataset(eran)
    np.testing.assert_allclose(data.x, [[0.0, 1.0, 0.2], [1.0, 0.0, 0.0]])
    assert data.y.tolist() == [7, 2]
    np.testing.assert_array_equal(load_dataset(eran, scale=1.0).x[0], [0.0, 255.0, 51.0])


def test_idx_pair_next_to_each_other(tmp_path: Path) -> None:
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2) * 20
    header = (2051).to_bytes(4, "big") + b"".join(v.to_bytes(4, "big") for v in (3, 2, 2))
    (tmp_path / "t-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
    labels = np.array([5, 6, 7], dtype=np.uint8)
    (tmp_path / "t-labels-idx1-ubyte").write_bytes(
        (2049).to_bytes(4, "big") + (3).to_bytes(4, "big") + labels.tobytes())
    with pytest.raises(InputError, match="labels-idx1"):
        load_dataset(tmp_path / "t-images-idx3-ubyte.gz")
    (tmp_path / "t-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress((tmp_path / "t-labels-idx1-ubyte").read_bytes()))
    for source in (tmp_path / "t-images-idx3-ubyte.gz", tmp_path):
        data = load_dataset(source, indices=[2, 0])
        np.testing.assert_allclose(data.x, images[[2, 0]].reshape(2, 4) / 255.0)
        assert data.y.tolist() == [7, 5]


@pytest.mark.parametrize(("y", "needle"), [(np.array([0, 1.5]), "1.5 at index 1"),
                                          (np.array(["a", "b"]), "integer classes")])
def test_non_integer_labels_are_input_errors(tmp_path: Path, y: np.ndarray,
                                             needle: str) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 3)), y=y)
    with pytest.raises(InputError, match=needle):
        load_dataset(tmp_path / "d.npz")
    assert labels_as_int(np.array([1.0, 2.0]), "y").tolist() == [1, 2]


@pytest.mark.parametrize(("files", "needle"), [
    ({"d.npz": None}, "needs arrays x and y"),
    ({"d.csv": "a,b\n1,2\n"}, "'label' column"),
    ({"d.csv": "1,2\n1,x\n"}, "line 2"),
    ({"d.json": "{}"}, "unknown data format"),
])
def test_malformed_files_name_the_problem(tmp_path: Path, files: dict, needle: str) -> None:  # type: ignore[type-arg]
    (name, text), = files.items()
    if text is None:
        np.savez(tmp_path / name, x=np.zeros((2, 3)))
    else:
        (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=needle):
        load_dataset(tmp_path / name)
    with pytest.raises(InputError, match="indices"):
        load_dataset(_good(tmp_path), indices=[9])


def _good(tmp_path: Path) -> Path:
    np.savez(tmp_path / "good.npz", x=np.zeros((2, 3)), y=np.array([0, 1]))
    return tmp_path / "good.npz"


def test_erans_mnist_csv_matches_the_idx_test_set() -> None:
    """The two MNIST sources in ../shared agree (pixels scaled to [0, 1], same labels)."""
    if not (SHARED_DATA / "mnist_test.csv").is_file():
        pytest.skip("../shared/benchmarks/data not present")
    csv_data = load_dataset(SHARED_DATA / "mnist_test.csv", limit=5)
    idx_data = load_dataset(SHARED_DATA / "mnist", limit=5)
    np.testing.assert_allclose(csv_data.x, idx_data.x)
    assert csv_data.y.tolist() == idx_data.y.tolist() == [7, 2, 1, 0, 4]
