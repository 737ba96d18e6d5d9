"""The command line end to end on a tiny configuration."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rnn_dynamics import cli

TINY = ["spectrum", "--hidden", "4", "--inputs", "2", "--steps", "12", "--seeds", "3"]


def test_spectrum_writes_results_table_and_plot(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(TINY + ["--gain", "0.5", "2.0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "vanilla-tanh g=0.5" in text and "vanilla-tanh g=2" in text and "median" in text
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] and res["config"]["steps"] == 12
    assert {"jax", "rnn_dynamics", "platform", "device_kind"} <= set(res["environment"])
    lo, hi = res["runs"]
    assert np.asarray(lo["log10_norms"]).shape == (3, 11)
    assert len(lo["log10_norm"]) == 3 and np.asarray(lo["singular_values"]).shape == (3, 4)
    assert np.median(lo["log10_norm"]) < np.median(hi["log10_norm"])  # larger gain, larger norm
    assert (out / "norms.png").stat().st_size > 10_000


def test_rerun_resumes_and_a_different_study_is_refused(tmp_path, capsys):
    out = str(tmp_path / "o")
    args = TINY + ["--gain", "1.0", "--out", out, "--no-plot"]
    assert cli.main(args) == 0
    first = json.loads((tmp_path / "o" / "results.json").read_text())
    assert cli.main(args) == 0
    assert "resuming: 1 of 1" in capsys.readouterr().out
    again = json.loads((tmp_path / "o" / "results.json").read_text())
    assert again["runs"] == first["runs"]
    with pytest.raises(SystemExit) as e:
        cli.main(TINY + ["--gain", "1.0", "--seeds", "4", "--out", out])
    assert e.value.code == 2
    assert "another configuration" in capsys.readouterr().err
    assert cli.main(TINY + ["--gain", "1.0", "--seeds", "4", "--out", out, "--overwrite", "--no-plot"]) == 0


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--hidden", "0"], "--hidden: expected a positive integer"),
        (["--steps", "1"], "--steps: expected T >= 2"),
        (["--gain", "-1"], "--gain: expected non-negative"),
        (["--cell", "transformer"], "invalid choice"),
        (["--method", "magic"], "invalid choice"),
        (["--seeds", "many"], "invalid int value"),
    ],
)
def test_bad_flags_exit_2_with_a_message(flags, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["spectrum", "--out", str(tmp_path)] + flags)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_other_cells_run(tmp_path):
    for cell in ("lstm", "univariate", "esn"):
        assert cli.main(TINY + ["--cell", cell, "--gain", "0.9", "--out", str(tmp_path / cell), "--no-plot"]) == 0


def test_module_entry_point_prints_help():
    r = subprocess.run([sys.executable, "-m", "rnn_dynamics", "spectrum", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--gain" in r.stdout


def test_x64_flag_computes_in_float64(tmp_path):
    import jax

    old = jax.config.jax_enable_x64
    try:
        # T = 400 at g = 0.8: the dense ∂h_T/∂h_1 (~1e-60 here) underflows in float32, not in float64
        assert cli.main(["spectrum", "--hidden", "4", "--inputs", "2", "--steps", "400", "--seeds", "2",
                         "--gain", "0.8", "--x64", "--out", str(tmp_path), "--no-plot"]) == 0
    finally:
        jax.config.update("jax_enable_x64", old)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["environment"]["x64"] is True and res["config"]["x64"] is True
    run = res["runs"][0]
    assert all(run["dense_ok"]) and max(run["log10_norm"]) < -45
    np.testing.assert_allclose(np.log10(np.asarray(run["singular_values"])[:, 0]), run["log10_norm"], atol=1e-8)
