"""Issue 20: every ``scripts/`` entry point fails cleanly on bad input (one ``error:`` line,
exit code 2, no traceback) and writes nothing."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

NOWHERE = "{missing}"

#: script -> arguments that name something missing ({missing}: a path that does not exist)
BAD_INPUT = {
    "bench_bounds": [NOWHERE, "--threads", "1", "--out", f"{NOWHERE}/b.md"],
    "bench_graph": ["--baseline", NOWHERE, "--out", f"{NOWHERE}/g.md"],
    "bench_formulations": [NOWHERE, "--out", f"{NOWHERE}/f.md"],
    "bench_input_split": ["--bench", NOWHERE, "--out", f"{NOWHERE}/b.md"],
    "bench_precision": ["--suite", NOWHERE],
    "bench_throughput": ["--arm", f"x={NOWHERE}", "--out", f"{NOWHERE}/t.md"],
    "bench_parallel": ["--bench", NOWHERE, "--out", f"{NOWHERE}/p.md"],
    "bdnn_experiments": ["--mnist", NOWHERE, "--out", f"{NOWHERE}/b.md"],
    "compare_branching": ["--bench-dir", NOWHERE, "--out-dir", f"{NOWHERE}/out"],
    "compare_solvers": [NOWHERE, "--solvers", "bnbver", "--out-dir", f"{NOWHERE}/out"],
    "hypothesis_random": [f"{NOWHERE}/test_x.py"],
    "fuzz_soundness": ["--n", "1", "--out", f"{NOWHERE}/fuzz.jsonl"],
    "bench_certificates": [NOWHERE],
    "plot_tree": [f"{NOWHERE}/tree.jsonl"],
    "seed_experiments": [NOWHERE],
    "train_seed_nets": [NOWHERE, "--out", f"{NOWHERE}/nets"],
}


def test_every_script_is_covered() -> None:
    assert set(BAD_INPUT) == {p.stem for p in (REPO / "scripts").glob("*.py")}


@pytest.mark.parametrize("script", sorted(BAD_INPUT))
def test_bad_input_is_one_error_line(script: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing"
    main = importlib.import_module(script).main
    assert main([a.format(missing=missing) for a in BAD_INPUT[script]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and str(missing) in err[-1]
    assert not any("Traceback" in line for line in err)
    assert not missing.exists()


def test_a_subprocess_sees_exit_code_2_and_no_traceback() -> None:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "compare_branching.py"),
                          "--smoke", "--heuristics", "babsr,unknown"],
                         capture_output=True, text=True, cwd=REPO, check=False)
    assert out.returncode == 2
    assert out.stderr.startswith("error: --heuristics") and "Traceback" not in out.stderr
