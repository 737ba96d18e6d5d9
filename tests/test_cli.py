"""The command line end to end on tiny configurations, checked against the library and closed forms."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import matplotlib
import numpy as np
import pytest

import rnn_dynamics as rd
from rnn_dynamics import cli, store

matplotlib.use("Agg")

pytestmark = pytest.mark.usefixtures("fast_compile")

TINY = ["spectrum", "--hidden", "4", "--inputs", "2", "--steps", "12", "--seeds", "3"]
# The shared study (T = 13, one gain per compiled call): no other test compiles this shape.
STUDY13 = ["spectrum", "--hidden", "4", "--inputs", "2", "--steps", "13", "--seeds", "3", "--chunk", "1"]


def _spectra(gain):
    """The library's numbers for STUDY13 at one gain (a direct call, no CLI)."""
    return rd.spectra(rd.cells.vanilla(2, 4, "tanh", gain=gain), jax.random.key(0), seeds=3, steps=13)


class _Compiles(logging.Handler):
    """Names of the functions XLA compiled while installed (from jax.log_compiles)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.names = []

    def emit(self, record):
        m = re.match(r"Finished XLA compilation of (?:jit\()?([^) ]+)", record.getMessage())
        if m:
            self.names.append(m.group(1))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study of one gain, then extended to four: the output folder, what was printed, the
    first run as first saved, and the names of every function XLA compiled meanwhile."""
    out = tmp_path_factory.mktemp("study") / "out"
    counter = _Compiles()
    logger = logging.getLogger("jax")
    logger.addHandler(counter)
    printed = []
    try:
        with jax.log_compiles():
            for gains, plot in ((["0.5"], ["--no-plot"]), (["0.5", "1.0", "2.0", "0.25"], [])):
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    assert cli.main(STUDY13 + ["--gain", *gains, "--out", str(out), *plot]) == 0
                printed.append(buf.getvalue())
                if len(printed) == 1:
                    first = store.load_results(out)["runs"][0]
    finally:
        logger.removeHandler(counter)
    return types.SimpleNamespace(out=out, printed=printed, first=first, compiles=counter.names)


def test_one_compile_serves_every_gain(study):
    # four gains in four compiled calls (--chunk 1) over two invocations: one compile, and
    # nothing else compiled twice either
    assert study.compiles.count("_spectrum_gains_impl") == 1, study.compiles
    assert len(study.compiles) == len(set(study.compiles)), study.compiles
    assert "one computation for 1 gain(s), 1 per call" in study.printed[0]
    assert "one computation for 3 gain(s), 1 per call" in study.printed[1]


def test_results_match_the_library(study):
    res = store.load_results(study.out, "spectrum")
    assert res["complete"] and res["config"]["gain"] == [0.5, 1.0, 2.0, 0.25]
    assert [r["gain"] for r in res["runs"]] == [0.5, 1.0, 2.0, 0.25]
    for run in res["runs"]:
        ref = _spectra(run["gain"])
        np.testing.assert_allclose(run["log10_norms"], ref.log10_norms, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(run["singular_values"], ref.singular_values, rtol=1e-4, atol=1e-6)
        assert run["dense_ok"] == [True] * 3
    assert "g=0.25" in study.printed[1] and "median" in study.printed[1]
    assert (study.out / "norms.png").stat().st_size > 10_000


def test_adding_gains_computes_only_the_new_ones(study):
    assert "reusing 1 finished gain(s) (0.5); computing 3 (1, 2, 0.25)" in study.printed[1]
    assert store.load_results(study.out)["runs"][0] == study.first  # not recomputed: same timing


def test_other_studies_are_refused_naming_the_keys_that_differ(study, tmp_path, capsys):
    out = tmp_path / "o"
    shutil.copytree(study.out, out)
    assert cli.main(STUDY13 + ["--gain", "1.5", "--out", str(out), "--no-plot"]) == 0
    assert "keeping gain(s) 0.5, 1, 2, 0.25 from the earlier study" in capsys.readouterr().out
    res = store.load_results(out)
    assert res["complete"] and res["config"]["gain"] == [1.5, 0.5, 1.0, 2.0, 0.25]
    with pytest.raises(SystemExit) as e:
        cli.main(STUDY13 + ["--gain", "1.0", "--seed", "1", "--method", "jacrev", "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "(method: 'jacfwd' there, 'jacrev' now; seed: 0 there, 1 now)" in err
    assert "--overwrite" in err and "another --out" in err
    assert cli.main(STUDY13 + ["--gain", "2.0", "--seed", "1", "--out", str(out), "--overwrite", "--no-plot"]) == 0
    res = store.load_results(out)
    assert res["config"]["seed"] == 1 and [r["gain"] for r in res["runs"]] == [2.0]
    before = store.load_results(study.out)["runs"][2]
    assert before["gain"] == 2.0 and res["runs"][0]["log10_norm"] != before["log10_norm"]  # new seeds


def test_non_finite_norms_are_stored_as_null_and_explained(study, tmp_path, capsys):
    # gain 0: W = 0, so ∂h_T/∂h_1 = 0 exactly and log10 ‖∂h_T/∂h_1‖₂ = -inf for every seed
    assert cli.main(STUDY13 + ["--gain", "0", "--out", str(tmp_path), "--no-plot"]) == 0
    text = capsys.readouterr().out
    raw = json.loads((tmp_path / "results.json").read_text(), parse_constant=_refuse_constant)
    assert raw["runs"][0]["log10_norm"] == [None] * 3 and raw["runs"][0]["dense_ok"] == [False] * 3
    assert re.search(r"g=0 .*\b0/3\b", text) and "-inf (the Jacobian is exactly zero" in text


def _refuse_constant(name):
    raise AssertionError(f"non-standard JSON constant {name} in the file")


def test_plot_reads_results_with_seed_count_legend_and_study_title(tmp_path):
    res = store.new_results({"cell": "vanilla", "hidden": 4, "steps": 4, "seeds": 2, "gain": [1.5]})
    curves = np.array([[0.0, -1.0, -2.0], [2.0, 1.0, np.nan]])
    res["runs"].append({"label": "g=1.5", "gain": 1.5, "cell": "vanilla-tanh", "seconds": 0.1,
                        "log10_norm": curves[:, -1], "growth_rate": [0.2, 0.3], "dense_ok": [True, True],
                        "singular_values": [[1.0], [1.0]], "log10_norms": curves})
    store.save_results(tmp_path / "results.json", res)
    fig = rd.plot.norm_curves(tmp_path)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["g=1.5, 2 seeds"]
    assert ax.get_title().startswith("vanilla-tanh, n = 4, T = 4:")
    assert ax.get_xlabel() == "t" and "partial h_t" in ax.get_ylabel()
    t, med = ax.lines[0].get_data()
    np.testing.assert_array_equal(t, [2, 3, 4])
    np.testing.assert_allclose(med, [1.0, 0.0, -2.0])  # NaN (a null in the file) left out


def test_a_file_of_another_schema_version_is_refused(tmp_path, capsys):
    store.save_json(tmp_path / "results.json", {"schema": store.SCHEMA, "schema_version": 99})
    with pytest.raises(SystemExit) as e:
        cli.main(TINY + ["--out", str(tmp_path)])
    assert e.value.code == 2
    assert "schema version 99, but this rnn_dynamics reads version 1" in capsys.readouterr().err


def test_h1_flag_gives_an_autonomous_study_from_a_random_state(tmp_path):
    T, g = 20, 2.0
    assert cli.main(TINY + ["--steps", str(T), "--seeds", "2", "--gain", str(g), "--input-scale", "0",
                            "--h1", "1", "--out", str(tmp_path), "--no-plot"]) == 0
    run = store.load_results(tmp_path)["runs"][0]
    cell = rd.cells.vanilla(2, 4, "tanh", gain=g)
    for i, key in enumerate(jax.random.split(jax.random.key(0), 2)):
        params, h, xs = rd.draw_seed(cell, key, T, input_scale=0.0, h1=1.0)
        W = np.asarray(params["W"], np.float64)
        h = np.asarray(h, np.float64)
        assert np.all(np.asarray(xs) == 0) and np.linalg.norm(h) > 0.5
        J = np.eye(4)
        for _ in range(T - 1):  # plain numpy: h_t = tanh(W h_{t-1}), J_t = diag(1 - h_t²) W
            h = np.tanh(W @ h)
            J = ((1 - h**2)[:, None] * W) @ J
        np.testing.assert_allclose(run["log10_norm"][i], np.log10(np.linalg.norm(J, 2)), atol=1e-4)


def test_univariate_cell_matches_the_closed_form_in_float64(tmp_path):
    # h' = w h + x: ∂h_T/∂h_1 = w^(T-1) whatever the inputs; 1.1^50 = 117.39 (Grosse, Lecture 16).
    # To 1e-12: float64 (float32 would be off by about 1e-7).
    old = jax.config.jax_enable_x64
    try:
        assert cli.main(["spectrum", "--cell", "univariate", "--activation", "linear", "--gain", "1.1",
                         "--steps", "51", "--seeds", "2", "--x64", "--out", str(tmp_path), "--no-plot"]) == 0
    finally:
        jax.config.update("jax_enable_x64", old)
    res = store.load_results(tmp_path)
    assert res["config"]["hidden"] == 1 and res["config"]["inputs"] == 1 and res["config"]["x64"] is True
    assert res["environment"]["x64"] is True
    run = res["runs"][0]
    np.testing.assert_allclose(run["log10_norm"], [50 * np.log10(1.1)] * 2, rtol=1e-12)
    np.testing.assert_allclose(run["growth_rate"], [1.1] * 2, rtol=1e-12)
    np.testing.assert_allclose(run["singular_values"], [[1.1**50]] * 2, rtol=1e-12)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--hidden", "0"], "--hidden: expected a positive int"),
        (["--steps", "1"], "--steps: expected T >= 2"),
        (["--gain", "-1"], "--gain: expected a finite non-negative"),
        (["--chunk", "0"], "--chunk: expected a positive int"),
        (["--cell", "transformer"], "invalid choice"),
        (["--seeds", "many"], "invalid int value"),
    ],
    ids=["hidden", "steps", "gain", "chunk", "cell", "seeds"],
)
def test_bad_flags_exit_2_with_the_flag_named(flags, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["spectrum", "--out", str(tmp_path)] + flags)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_plugins_are_registered_and_only_their_own_absence_is_skipped(tmp_path, monkeypatch, capsys):
    fake = types.ModuleType("rnn_dynamics._cli_fake")

    def register(sub):
        p = sub.add_parser("fake", help="a test sub-command")
        p.add_argument("--n", type=int, default=1)
        p.set_defaults(func=lambda args: 40 + args.n)

    fake.register = register
    monkeypatch.setitem(sys.modules, "rnn_dynamics._cli_fake", fake)
    monkeypatch.setattr(cli, "PLUGINS", ("_cli_absent", "_cli_fake"))
    assert cli.main(["fake", "--n", "2"]) == 42
    # a plugin whose own import fails on a missing dependency is an error, not skipped
    (tmp_path / "_cli_broken.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.setattr(rd, "__path__", list(rd.__path__) + [str(tmp_path)])
    monkeypatch.setattr(cli, "PLUGINS", ("_cli_broken",))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        cli.main(["spectrum", "--help"])


# ---------------------------------------------------------------------------------------------
# Ctrl-C: a subprocess interrupted while computing, then while compiling, then finished.

GAINS = [f"{g:.2f}" for g in np.linspace(0.6, 1.1, 6)]  # about 0.1-0.3 s each on 2 cores
STUDY = ["spectrum", "--hidden", "24", "--inputs", "2", "--steps", "600", "--seeds", "24",
         "--chunk", "1", "--no-plot", "--gain", *GAINS]


def _start(out, cache=True):
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1")  # compile faster; same for every run
    if cache:  # XLA's persistent cache: later runs load the executable the first one compiled
        env.update(JAX_COMPILATION_CACHE_DIR=str(out / "jax_cache"),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return subprocess.Popen([sys.executable, "-m", "rnn_dynamics", *STUDY, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _runs(path):
    try:
        return store.load_results(path, "spectrum")["runs"]
    except FileNotFoundError:
        return []


def _saved(path):
    """The number of saved runs, re-read only when the file changes (keeps the polling cheap)."""
    seen = {"mtime": None, "n": 0}

    def count():
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0
        if mtime != seen["mtime"]:
            seen.update(mtime=mtime, n=len(_runs(path)))
        return seen["n"]

    return count


def _interrupt_when(p, ready, timeout=120):
    t0 = time.monotonic()
    while not ready():
        assert p.poll() is None, f"finished before the interrupt: {p.communicate()}"
        assert time.monotonic() - t0 < timeout
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=timeout)
    assert "Fatal Python error" not in err and p.returncode == 130, (p.returncode, err[-3000:])
    return out, err


def test_ctrl_c_saves_finished_gains_and_exits_130_and_a_rerun_computes_the_rest(tmp_path):
    path = tmp_path / "results.json"
    # 1. while computing: after the first gain is saved
    p = _start(tmp_path)
    saved = _saved(path)
    _interrupt_when(p, lambda: saved() >= 1)
    first = _runs(path)
    assert 1 <= len(first) < len(GAINS)
    assert [r["gain"] for r in first] == [float(g) for g in GAINS[: len(first)]]
    assert store.load_results(path)["complete"] is False
    # 2. while compiling (no cache): right after the resume message, before any new gain
    p = _start(tmp_path, cache=False)
    assert p.stdout.readline().startswith(f"resuming {path}: reusing {len(first)} finished gain(s)")
    _interrupt_when(p, lambda: True)
    assert _runs(path) == first
    # 3. to the end: only the rest is computed
    p = _start(tmp_path)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    rest = len(GAINS) - len(first)
    assert f"reusing {len(first)} finished gain(s)" in out and f"computing {rest} (" in out
    assert f"one computation for {rest} gain(s)" in out
    res = store.load_results(path, "spectrum")
    assert res["complete"] and [r["gain"] for r in res["runs"]] == [float(g) for g in GAINS]
    assert res["runs"][: len(first)] == first


@pytest.mark.slow
def test_ctrl_c_never_crashes_at_any_moment(tmp_path):
    # Ctrl-C at spread-out moments (import, tracing, compiling, computing) of fresh runs: a crash
    # at exit (segfault -11, "Fatal Python error") was intermittent, so try several times.
    for i, delay in enumerate([2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0]):
        out = tmp_path / str(i)
        p = _start(out, cache=False)
        time.sleep(delay)
        if p.poll() is not None:
            break
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
        assert "Fatal Python error" not in err, err[-3000:]
        if p.returncode != 130:
            # still importing jax, before the CLI's handler: Python's default KeyboardInterrupt
            # (exit -2), or swallowed by jax's gc callback and the study ran to its end (exit 0)
            assert p.returncode == -signal.SIGINT or (
                p.returncode == 0 and "Exception ignored in: <function _xla_gc_callback" in err
            ), (delay, p.returncode, err[-3000:])
        elif (out / "results.json").exists():
            store.load_results(out, "spectrum")  # valid, whatever was finished
