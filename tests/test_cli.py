"""The ``ess-widgets`` command, run as a user runs it: in a subprocess, from another folder.

Exit codes, ``--help``, the files written (compared with the in-process API that the
command wraps), and errors that end in one line instead of a traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
MQAR = "mqar-gla-dk8-kv8"
MQAR_TEXT = "k3 v17 k5 v20 _ _ q:k5 _ q:k3"


def _entry_point() -> str:
    """The console script's target from pyproject.toml, as ``module:function``."""
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^ess-widgets\s*=\s*"([\w.]+:\w+)"', text, re.M).group(1)


def run_command(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``ess-widgets ARGS`` the way the installed console script calls it."""
    module, function = _entry_point().split(":")
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_exits_0_and_names_the_options(tmp_path):
    result = run_command(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--model", "--text", "--output", "--tol", "--relative", "--layers"):
        assert option in result.stdout
    assert result.stdout.startswith("usage: ess-widgets")
    assert not list(tmp_path.iterdir()), "--help wrote something"


def test_without_a_model_writes_the_example_report(tmp_path):
    from ess_widgets.app.report import ess_report

    result = run_command(tmp_path)
    assert result.returncode == 0, result.stderr
    written = pd.read_csv(tmp_path / "out" / "ess_report.csv")
    expected = ess_report(64, tol=1e-6, relative=True)
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)
    assert written.set_index("mixer").loc["LTI, state 3", "tolerance_ess_peak"] == 3
    assert "written: out" in result.stdout


def test_model_table_matches_the_handle(tmp_path):
    import ess_widgets

    out = tmp_path / "tables" / "gla.csv"
    args = ["--model", MQAR, "--text", MQAR_TEXT, "--output", str(out), "--tol", "1e-2"]
    result = run_command(tmp_path, *args, "--relative", "--layers", "1")
    assert result.returncode == 0, result.stderr
    written = pd.read_csv(out, keep_default_na=False)
    expected = ess_widgets.load(MQAR).ess_table(MQAR_TEXT, [1], tol=1e-2, relative=True)
    assert list(written.columns) == list(expected.columns)
    for column in ("layer", "split", "tolerance_ess", "entropy_ess", "bound", "tss"):
        assert column in written.columns
    assert len(written) == len(expected) > 0
    assert (written["layer"] == 1).all()
    for column in ("split", "tolerance_ess", "bound", "tss"):
        assert written[column].tolist() == expected[column].tolist(), column
    assert written["entropy_ess"].tolist() == pytest.approx(expected["entropy_ess"].tolist())
    assert written["token"].astype(str).tolist() == expected["token"].astype(str).tolist()


def test_parquet_output(tmp_path):
    pytest.importorskip("pyarrow")
    out = tmp_path / "t.parquet"
    result = run_command(tmp_path, "-m", MQAR, "-o", str(out), "--layers", "0", "--splits", "8")
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(out)
    assert set(table["layer"]) == {0}
    L = 64  # the model's own example sequence
    assert sorted(set(table["split"])) == [*range(1, L, 8), L - 1]
    assert (table["tolerance_ess"] <= table[["bound", "tss"]].min(axis=1)).all()


def test_unknown_model_fails_in_one_line(tmp_path):
    result = run_command(tmp_path, "--model", "no-such-model-xyz")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ess-widgets: error: ")
    assert "no-such-model-xyz" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--output", "table.xlsx"], "--output must end in .csv or .parquet"),
        (["--text", "hello"], "need --model"),
        (["--tol", "-1"], "tolerance >= 0"),
        (["--layers", "a,b"], "layer numbers"),
        (["--splits", "x"], "a stride"),
        (["--splits", "4"], "need --model"),
    ],
    ids=["suffix", "text-without-model", "negative-tol", "bad-layers", "bad-splits", "splits"],
)
def test_usage_errors_exit_2(tmp_path, monkeypatch, capsys, args, message):
    from ess_widgets.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("usage: ess-widgets")
    assert not list(tmp_path.iterdir())
