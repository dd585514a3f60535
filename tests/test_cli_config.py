"""``--config FILE.toml`` on every command, ``--version``, ``-q``, and ``verify --json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnbver import __version__
from bnbver.cli import _parse, main
from bnbver.result import Result

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO / "examples/mnist_fc/mnist-net_256x2.onnx"
UNSAT = REPO / "examples/mnist_fc/prop_0_0.03.vnnlib"

#: the command each bundled config file is written for, and the arguments it still needs
CONFIGS = {"acasxu.toml": ["run-suite", "instances.csv", "--out", "r.csv"],
           "mnist_fc.toml": ["run-suite", "instances.csv", "--out", "r.csv"],
           "mnist_fc_milp.toml": ["run-suite", "instances.csv", "--out", "r.csv"],
           "sri_resnet_a.toml": ["run-suite", "instances.csv", "--out", "r.csv"],
           "oval21.toml": ["run-suite", "instances.csv", "--out", "r.csv"],
           "certify_mnist.toml": ["certify"]}


def test_issue_18_every_bundled_config_is_valid() -> None:
    found = sorted(p.name for p in (REPO / "configs").glob("*.toml"))
    assert found == sorted(CONFIGS)
    for name, argv in CONFIGS.items():
        args = _parse([*argv, "--config", str(REPO / "configs" / name)])
        assert args.command == argv[0]
        if argv[0] == "run-suite":
            from bnbver.driver import parse_options

            parse_options(args.option)  # raises unless every NAME=VALUE is a real option
    args = _parse(["certify", "--config", str(REPO / "configs/certify_mnist.toml")])
    assert args.model.endswith("mnist-net_256x2.onnx") and args.eps == "0.01,0.03"
    assert args.domain == "0,1" and args.timeout == 30.0


def test_issue_18_command_line_overrides_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'net = "{MNIST}"\nprop = "{UNSAT}"\ntimeout = 5\njson = true\n'
                   f'option = ["clip=false"]\nquiet = true\n')
    args = _parse(["verify", "--config", str(cfg), "--timeout", "7", "--option", "steps=3"])
    assert (args.net, args.prop) == (str(MNIST), str(UNSAT))
    assert args.timeout == 7.0 and args.json is True and args.quiet is True
    assert args.option == ["clip=false", "steps=3"]


@pytest.mark.parametrize(("text", "needle"), [
    ("bogus = 1\n", "unknown option 'bogus'"),
    ('timeout = "soon"\n', "timeout: 'soon' is not a valid value"),
    ('split = "sideways"\n', "split: 'sideways' is not one of"),
    ("json = 3\n", "json: expected true or false"),
    ("timeout = [\n", "not valid TOML"),
])
def test_issue_18_bad_config_is_one_error_line(text: str, needle: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert main(["verify", str(MNIST), str(UNSAT), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {cfg}: ") and needle in err[0]


def test_issue_18_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ok:
        main(["--version"])
    assert ok.value.code == 0 and capsys.readouterr().out.strip() == f"bnbver {__version__}"


def test_issue_18_verify_json_and_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(MNIST), str(UNSAT), "--json", "--timeout", "60"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["status"] == "unsat" and data["lower_bound"] > 0
    assert data["certificate_leaves"] >= 1 and err.startswith("unsat in ")
    assert Result.from_dict(data).lower_bound == data["lower_bound"]
    assert main(["-q", "verify", str(MNIST), str(UNSAT), "--timeout", "60"]) == 0
    out, err = capsys.readouterr()
    assert out == "unsat\n" and err == ""
