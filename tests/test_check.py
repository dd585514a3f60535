"""Issue 16: proof certificates of ``unsat`` and the independent checker (bnbver.check).

The oracle is exhaustive activation-pattern enumeration (tests/oracle.py), never the search's
own answer; every tampering of a valid certificate must be rejected.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnbver.bab.loop import BabOptions, run_bab
from bnbver.check import check_proof
from bnbver.check.format import INPUT, INTERNAL, RELU, ProofFile, Tree
from bnbver.driver import VerifierOptions, verify
from bnbver.io.loaders import load_network, load_properties
from bnbver.network import Dense, Network
from bnbver.result import Status
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet
from tests.conftest import random_relu_net
from tests.oracle import max_linear_output


def _instance(seed: int, n_in: int, hidden: list[int], offset: float
              ) -> tuple[Network, Property, bool]:
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, [n_in, *hidden, 2], scale=1.5)
    box = InputBox(-np.ones(n_in), np.ones(n_in))
    c = np.array([1.0, -1.0])
    best, _ = max_linear_output(net, c, box.lower, box.upper)
    prop = Property(box, UnsafeSet((HalfSpaces([-c], [-(best + offset)]),)))
    return net, prop, best >= best + offset


def _proof(net: Network, prop: Property, **options: object) -> ProofFile:
    opts = BabOptions(batch_size=4, iterations=5, certify="strict", **options)  # type: ignore[arg-type]
    res = run_bab(net, prop, opts, deadline=time.monotonic() + 60)
    assert res.status is Status.HOLDS and res.certificate is not None
    assert res.certificate.proof is not None
    return res.certificate.proof


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_in=st.integers(1, 3),
       hidden=st.lists(st.integers(2, 5), min_size=1, max_size=2),
       split=st.sampled_from(["relu", "input"]), lp_leaves=st.booleans())
def test_every_unsat_of_a_tiny_net_certifies(seed: int, n_in: int, hidden: list[int],
                                             split: str, lp_leaves: bool) -> None:
    """The oracle says unsat (margin 0.05 above the true maximum); the strict certificate
    checks, with no uncertified leaf. With interval bounds only, the fully split leaves are
    closed by exact LPs, whose duals the certificate carries."""
    net, prop, violated = _instance(seed, n_in, hidden, 0.05)
    assert not violated
    extra = {"root_method": "ibp", "child_method": "ibp"} if lp_leaves else {}
    proof = _proof(net, prop, split=split, **extra)
    report = check_proof(net, [prop], proof, strict=True)
    assert report.valid, report.failure
    assert report.uncertified == 0 and report.leaves >= 1


def test_checker_rejects_a_certificate_for_a_violated_property() -> None:
    """A certificate of an unsat instance checked against the same net with the threshold
    moved below the true maximum (the oracle says sat) must fail."""
    for seed in range(6):
        net, prop, _ = _instance(seed, 2, [4, 4], 0.05)
        proof = _proof(net, prop, split="relu")
        _, _, violated = _instance(seed, 2, [4, 4], -0.05)
        assert violated
        c = np.array([1.0, -1.0])
        best, _ = max_linear_output(net, c, prop.box.lower, prop.box.upper)
        sat_prop = Property(prop.box, UnsafeSet((HalfSpaces([-c], [-(best - 0.05)]),)))
        assert not check_proof(net, [sat_prop], proof).valid


def _several_disjuncts(seed: int) -> tuple[Network, Property]:
    """A 2-6-6-4 net; unsafe: y0 - yj above its true maximum (oracle) + 0.02, for j = 1..3."""
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, [2, 6, 6, 4], scale=1.5)
    box = InputBox(-np.ones(2), np.ones(2))
    disjuncts = []
    for j in range(1, 4):
        c = np.zeros(4)
        c[0], c[j] = 1.0, -1.0
        best, _ = max_linear_output(net, c, box.lower, box.upper)
        disjuncts.append(HalfSpaces([-c], [-(best + 0.02)]))
    return net, Property(box, UnsafeSet(tuple(disjuncts)))


@pytest.mark.parametrize("seed", [12, 49])
def test_a_disjunct_excluded_above_a_leaf_is_claimed_and_rechecked(seed: int) -> None:
    """A child keeps its parent's bound of a disjunct, but its own CROWN bound of it can be
    lower (the relaxation's slopes change with the box): the certificate claims the disjunct
    where a node's own bound excludes it, and the checker re-derives it there (ACAS Xu 1_1
    prop_6 was rejected without claims). Seeds 12 and 49 need their claims; a claim where
    the bound does not hold is rejected."""
    net, prop = _several_disjuncts(seed)
    proof = _proof(net, prop, split="input")
    tree = proof.trees[0]
    assert check_proof(net, [prop], proof, strict=True).valid
    assert tree.claim_node.size > 0
    none = tree.claim_node[:0]
    assert not _checked(net, prop, proof, replace(tree, claim_node=none, claim_disjunct=none))
    at_root = np.zeros_like(tree.claim_node)
    assert not _checked(net, prop, proof, replace(tree, claim_node=at_root))


def _tampered(tree: Tree, **changes: np.ndarray) -> ProofFile:
    return ProofFile((replace(tree, **changes),), (), 0)


def _checked(net: Network, prop: Property, proof: ProofFile, tree: Tree) -> bool:
    fixed = ProofFile((tree,), proof.relu_sizes, proof.input_size)
    return check_proof(net, [prop], fixed).valid


@pytest.fixture(scope="module")
def relu_case() -> tuple[Network, Property, ProofFile]:
    """An unsat instance whose ReLU-split tree has internal nodes and dual proofs."""
    for seed in range(40):
        net, prop, _ = _instance(seed, 2, [5, 5], 0.02)
        proof = _proof(net, prop, split="relu")
        tree = proof.trees[0]
        if tree.size >= 5 and tree.proof_node.size >= 1:
            return net, prop, proof
    raise AssertionError("no instance with a branched tree")


@pytest.fixture(scope="module")
def input_case() -> tuple[Network, Property, ProofFile]:
    for seed in range(40):
        net, prop, _ = _instance(seed, 2, [5, 5], 0.02)
        proof = _proof(net, prop, split="input")
        if proof.trees[0].size >= 5:
            return net, prop, proof
    raise AssertionError("no instance with a branched tree")


def test_tampering_with_the_tree_is_rejected(relu_case: tuple[Network, Property, ProofFile],
                                             input_case: tuple[Network, Property, ProofFile]
                                             ) -> None:
    net, prop, proof = relu_case
    tree = proof.trees[0]
    assert _checked(net, prop, proof, tree)
    # a leaf dropped (the last node: its sibling is left alone under their parent)
    n = tree.size - 1
    keep = tree.proof_node < n
    dropped = replace(tree, **{f: getattr(tree, f)[:n] for f in (
        "parent", "kind", "layer", "unit", "active", "mid", "recompute", "status",
        "clipped")}, proof_node=tree.proof_node[keep], proof_disjunct=tree.proof_disjunct[keep],
        proof_weights=tree.proof_weights[keep], proof_nu=tree.proof_nu[keep])
    assert not _checked(net, prop, proof, dropped)
    # a split's phase flipped: both children active
    child = int(np.flatnonzero(tree.kind == RELU)[0])
    active = tree.active.copy()
    sibling = next(c for c in np.flatnonzero(tree.parent == tree.parent[child]) if c != child)
    active[sibling] = active[child]
    assert not _checked(net, prop, proof, replace(tree, active=active))
    # an internal node claimed closed, its subtree kept: a closed node with children
    status = tree.status.copy()
    status[tree.parent[child]] = 1
    assert not _checked(net, prop, proof, replace(tree, status=status))
    # input trees: a box widened beyond the region it comes from
    net, prop, proof = input_case
    tree = proof.trees[0]
    assert _checked(net, prop, proof, tree)
    i = int(np.flatnonzero(tree.kind == INPUT)[0])
    hi = tree.box_hi.copy()
    hi[i] = hi[i] + 0.5
    assert not _checked(net, prop, proof, replace(tree, box_hi=hi))
    # a split point moved outside its parent's box
    mid = tree.mid.copy()
    mid[i] = 10.0
    assert not _checked(net, prop, proof, replace(tree, mid=mid))


def test_tampering_with_multipliers_is_rejected(relu_case: tuple[Network, Property, ProofFile]
                                               ) -> None:
    """A perturbed proof no longer bounds its disjunct; the leaves that relied on it (and
    that interval and CROWN bounds cannot close) fail. Intermediate bounds cannot be
    tightened by a certificate at all: the checker derives them, and a stored root proof is
    evaluated for the neuron it names, so a wrong one only loosens a bound."""
    net, prop, proof = relu_case
    tree = proof.trees[0]
    bad_nu = tree.proof_nu * -3.0
    bad_w = tree.proof_weights.copy()
    assert not _checked(net, prop, proof, replace(tree, proof_nu=bad_nu)) or not \
        _checked(net, prop, proof, replace(tree, proof_weights=-bad_w))
    assert not _checked(net, prop, proof, replace(tree, proof_weights=-bad_w))
    if tree.root_node.size:
        loose = replace(tree, root_nu=np.zeros_like(tree.root_nu) + 1e3)
        report = check_proof(net, [prop], ProofFile((loose,), proof.relu_sizes,
                                                    proof.input_size))
        assert report.valid or "not excluded" in report.failure


def test_uncertified_leaves_are_reported_and_strict_refuses_them() -> None:
    net, prop, _ = _instance(1, 2, [3, 3], 0.01)
    opts = BabOptions(split="relu", batch_size=4, root_method="ibp", child_method="ibp",
                      milp_max_unstable=6, certify="on")
    res = run_bab(net, prop, opts, deadline=time.monotonic() + 60)
    assert res.status is Status.HOLDS and res.certificate and res.certificate.proof
    report = check_proof(net, [prop], res.certificate.proof)
    assert report.valid and report.uncertified > 0
    assert "solver-decided" in report.line()
    assert not check_proof(net, [prop], res.certificate.proof, strict=True).valid


def test_bundled_examples_certify_through_the_cli(examples_dir: Path, tmp_path: Path) -> None:
    """verify --certificate then check, both commands; a certificate of one property does
    not check for another."""
    acas = examples_dir / "acasxu"
    net = acas / "ACASXU_run2a_1_1_batch_2000.onnx"
    mnist = examples_dir / "mnist_fc"
    cases = [(net, acas / "prop_1.vnnlib"),
             (mnist / "mnist-net_256x2.onnx", mnist / "prop_0_0.03.vnnlib")]
    for k, (onnx, prop) in enumerate(cases):
        cert = tmp_path / f"c{k}.npz"
        out = subprocess.run([sys.executable, "-m", "bnbver.cli", "verify", str(onnx),
                              str(prop), "--certificate", str(cert), "--timeout", "120"],
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "unsat"
        check = subprocess.run([sys.executable, "-m", "bnbver.cli", "check", str(onnx),
                                str(prop), str(cert), "--strict"], capture_output=True,
                               text=True)
        assert check.returncode == 0 and check.stdout.startswith("certificate valid: "), (
            check.stdout + check.stderr)
    other = subprocess.run([sys.executable, "-m", "bnbver.cli", "check", str(net),
                            str(acas / "prop_2.vnnlib"), str(tmp_path / "c0.npz")],
                           capture_output=True, text=True)
    assert other.returncode == 1 and "INVALID" in other.stdout


def test_result_certificate_saves_only_with_a_proof(tmp_path: Path) -> None:
    net = Network((Dense([[1.0]], [1.0]),), (1,))
    prop = Property(InputBox(np.zeros(1), np.ones(1)), UnsafeSet((HalfSpaces([[1.0]], [0.5]),)))
    res = verify(net, prop, VerifierOptions.from_kwargs(timeout=10, certify="on"))
    assert res.status is Status.HOLDS and res.certificate is not None
    res.certificate.save(tmp_path / "c.npz")
    assert check_proof(net, [prop], ProofFile.load(tmp_path / "c.npz")).valid
    plain = verify(net, prop, VerifierOptions.from_kwargs(timeout=10))
    assert plain.certificate is not None
    with pytest.raises(Exception, match="no proof"):
        plain.certificate.save(tmp_path / "d.npz")


def test_a_garbled_file_is_reported(tmp_path: Path, examples_dir: Path) -> None:
    acas = examples_dir / "acasxu"
    network = load_network(acas / "ACASXU_run2a_1_1_batch_2000.onnx")
    props = load_properties(acas / "prop_1.vnnlib", network)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a certificate")
    from bnbver.check import check_certificate

    report = check_certificate(network, props, bad)
    assert not report.valid and "cannot read" in report.failure
    assert INTERNAL == 0  # the status codes are part of the file format


def test_small_batches_check_the_same_and_find_a_deep_leaf(
        relu_case: tuple[Network, Property, ProofFile],
        input_case: tuple[Network, Property, ProofFile], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checker derives bounds for batches of nodes (and bounds targets in chunks of
    rows): batches of 2 nodes and tiny chunks (every boundary crossed, batches taken from
    several stack entries and split again) give the same verdict, and a leaf deep in the
    tree that claims what its bounds do not show is named."""
    from bnbver.check import bounds
    from bnbver.check import tree as tree_mod

    full = [check_proof(net, [prop], proof) for net, prop, proof in (relu_case, input_case)]
    monkeypatch.setattr(tree_mod, "BATCH", 2)
    monkeypatch.setattr(bounds, "CHUNK_ENTRIES", 8)
    for (net, prop, proof), ref in zip((relu_case, input_case), full, strict=True):
        small = check_proof(net, [prop], proof)
        assert ref.valid and small.valid, small.failure
        assert (small.leaves, small.uncertified) == (ref.leaves, ref.uncertified)
        tree = proof.trees[0]
        depth = np.zeros(tree.size, int)
        for i in range(1, tree.size):
            depth[i] = depth[tree.parent[i]] + 1
        leaves = np.flatnonzero(tree.status != INTERNAL)
        deep = int(leaves[np.argmax(depth[leaves])])
        status = tree.status.copy()
        status[deep] = 2  # INFEASIBLE: a leaf of a valid tree has consistent bounds
        report = check_proof(net, [prop], ProofFile((replace(tree, status=status),),
                                                    proof.relu_sizes, proof.input_size))
        assert not report.valid and report.failure.startswith(f"tree 0, node {deep}: "), (
            report.failure)


def test_root_proofs_cannot_tighten_bounds_by_their_sign() -> None:
    """A stored root proof bounds +z_j (sign > 0) or -z_j: a sign of 0 or 2 must not scale
    the row (a zero row's bound would set an upper bound of about 0, a doubled row twice
    the lower bound). The bounds must hold at sampled points whatever the proofs say."""
    from bnbver.check.bounds import RootProofs, node_bounds
    from bnbver.check.net import check_net

    rng = np.random.default_rng(3)
    net = random_relu_net(rng, [2, 5, 5, 2], scale=1.5)
    cnet = check_net(net)
    sizes = cnet.relu_sizes
    q = 4 * sizes[1]
    proofs = RootProofs(node=np.zeros(q, np.int64), layer=np.ones(q, np.int64),
                        unit=np.tile(np.arange(sizes[1]), 4),
                        sign=np.repeat(np.array([0, 2, -2, 1], np.int8), sizes[1]),
                        nu=np.zeros((q, sum(sizes))))
    box = (-np.ones((1, 2)), np.ones((1, 2)))
    nb = node_bounds(cnet, box, [np.zeros((1, n), np.int8) for n in sizes],
                     ([np.full((1, n), -np.inf) for n in sizes],
                      [np.full((1, n), np.inf) for n in sizes]), np.array([True]), proofs)
    x = np.vstack([rng.uniform(-1, 1, (4000, 2)), [[-1, -1], [-1, 1], [1, -1], [1, 1]]])
    _, pre = net.forward_with_preactivations(x)
    for k, z in enumerate(pre):
        assert np.all(z >= nb.lower[k][0]) and np.all(z <= nb.upper[k][0]), k


def test_certificates_with_several_jobs_stay_in_one_process() -> None:
    """``--jobs 2`` (or auto) with certificates: the proof is one tree, so the search runs in
    this process and the certificate checks (it was an internal error once the search spread
    to workers: here it would spread at once)."""
    from bnbver.bab.parallel import ShareOptions, run_parallel

    net, prop = _several_disjuncts(12)
    opts = BabOptions(batch_size=4, iterations=5, certify="on", split="input", jobs=2)
    share = ShareOptions(head_open_per_job=1, wait_for_workers=False, max_slice=0.0)
    res = run_parallel(net, prop, opts, time.monotonic() + 60, share=share)
    assert res.status is Status.HOLDS and res.certificate is not None
    assert res.certificate.proof is not None
    assert check_proof(net, [prop], res.certificate.proof, strict=True).valid
