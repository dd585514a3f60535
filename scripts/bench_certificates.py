"""Certify every ``unsat`` instance of a suite and re-check each proof (issue 16).

For each instance whose expected answer is unsat: verify with certificates (strict by
default: no leaf may rest on a MILP solver alone), save the proof, check it with the
independent checker, and write one CSV row: the answer, verification and checking seconds,
nodes, leaves, uncertified leaves, the proof's size on disk and in memory, and the checker's
line. Resumable (``--resume``); ``--md`` writes a summary table.

    python scripts/bench_certificates.py ../shared/benchmarks/acasxu --timeout 120 \\
        --out results/certificates/acasxu.csv --resume --md results/certificates/acasxu.md
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from harness.errors import clean_exit  # noqa: E402
from harness.instances import InstanceRef, select  # noqa: E402

from bnbver.check import check_certificate  # noqa: E402
from bnbver.driver import VerifierOptions, verify  # noqa: E402
from bnbver.errors import InputError  # noqa: E402
from bnbver.io.loaders import load_network, load_properties  # noqa: E402
from bnbver.result import Status  # noqa: E402

FIELDS = ["instance", "result", "verify_s", "nodes", "check_s", "valid", "leaves",
          "uncertified", "file_kb", "memory_kb", "check_line"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", nargs="?", help="a suite folder with instances.csv")
    parser.add_argument("--filter", action="append", default=[],
                        help="keep instances whose name contains this (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--certify", choices=["on", "strict"], default="strict")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", default=None, help="CSV of rows")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--md", default=None, help="Markdown summary")
    parser.add_argument("--keep", default=None, help="folder for the proof files")
    parser.add_argument("--smoke", action="store_true", help="one bundled instance")
    return parser.parse_args(argv)


def certify_one(ref: InstanceRef, args: argparse.Namespace, folder: Path) -> dict[str, str]:
    """Verify one instance with certificates, save and check the proof; return its row."""
    from bnbver.driver import parse_options

    network = load_network(ref.onnx)
    props = load_properties(ref.vnnlib, network)
    kwargs = {"timeout": args.timeout, "certify": args.certify,
              **parse_options(args.option)}
    start = time.monotonic()
    res = verify(network, props, VerifierOptions.from_kwargs(**kwargs))
    row = {"instance": ref.name, "result": res.status.value,
           "verify_s": f"{time.monotonic() - start:.3f}", "nodes": str(res.stats.nodes)}
    if res.status is not Status.HOLDS or res.certificate is None:
        return row
    path = folder / (ref.name.replace("/", "__") + ".npz")
    res.certificate.save(path)
    report = check_certificate(network, props, path, strict=args.certify == "strict")
    proof = res.certificate.proof
    row.update(check_s=f"{report.seconds:.3f}", valid=str(report.valid),
               leaves=str(report.leaves), uncertified=str(report.uncertified),
               file_kb=f"{path.stat().st_size / 1024:.1f}",
               memory_kb=f"{(proof.nbytes() if proof else 0) / 1024:.1f}",
               check_line=report.line())
    return row


def _median(xs: list[float]) -> float:
    return xs[len(xs) // 2] if xs else float("nan")


def summary(rows: list[dict[str, str]]) -> str:
    """Return a Markdown table of the rows' totals."""
    unsat = [r for r in rows if r["result"] == "unsat"]
    valid = [r for r in unsat if r.get("valid") == "True"]
    strict = [r for r in valid if r.get("uncertified") == "0"]
    v = sum(float(r["verify_s"]) for r in unsat)
    c = sum(float(r["check_s"]) for r in valid)
    sizes = sorted(float(r["file_kb"]) for r in valid)
    ratio = sorted(float(r["check_s"]) / max(float(r["verify_s"]), 1e-9) for r in valid)
    return "\n".join([
        "| instances | unsat found | certificates valid | with 0 uncertified leaves | "
        "verify s (sum) | check s (sum) | check/verify (median, max) | file KB (median, max) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(rows)} | {len(unsat)} | {len(valid)} | {len(strict)} | {v:.1f} | {c:.1f} | "
        f"{_median(ratio):.2f}, {max(ratio, default=float('nan')):.2f} | "
        f"{_median(sizes):.1f}, {max(sizes, default=float('nan')):.1f} |"])


@clean_exit
def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status (1 when a certificate fails to check)."""
    args = parse_args(argv)
    if args.smoke:
        ex = REPO / "examples" / "acasxu"
        refs = [InstanceRef("examples/acasxu/1_1/prop_1",
                            ex / "ACASXU_run2a_1_1_batch_2000.onnx", ex / "prop_1.vnnlib",
                            "unsat")]
    else:
        if args.suite is None or not (Path(args.suite) / "instances.csv").is_file():
            raise InputError(str(args.suite), "not a suite folder with instances.csv")
        refs = [r for r in select(Path(args.suite), args.filter, None)
                if r.expected == "unsat"][:args.limit]
    done: dict[str, dict[str, str]] = {}
    out = Path(args.out) if args.out else None
    if out is not None and args.resume and out.is_file():
        with out.open() as fh:
            done = {r["instance"]: r for r in csv.DictReader(fh)}
    rows = [done[r.name] for r in refs if r.name in done]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for ref in refs:
            if ref.name in done:
                continue
            row = certify_one(ref, args, folder)
            rows.append(row)
            print(",".join(row.get(f, "") for f in FIELDS[:8]), flush=True)
            if out is not None:
                _append(out, row)
    table = summary(rows)
    print(table)
    if args.md:
        Path(args.md).write_text(table + "\n")
    return 1 if any(r.get("valid") == "False" for r in rows) else 0


def _append(path: Path, row: dict[str, str]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS)
        if new:
            w.writeheader()
        w.writerow({f: row.get(f, "") for f in FIELDS})


if __name__ == "__main__":
    sys.exit(main())
