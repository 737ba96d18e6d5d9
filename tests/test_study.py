"""rd.study: grids of configurations × seeds, sharding over devices, the resumable store, plots, CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import matplotlib
import numpy as np
import pytest

import rnn_dynamics as rd
from rnn_dynamics import study

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("fast_compile")  # compile faster; the subprocesses too

ROOT = Path(__file__).resolve().parents[1]

# Two shapes (vanilla-tanh, gru) × 2 gains × 2 input scales, both metrics: 8 configurations.
SMALL = dict(cell=["vanilla", "gru"], hidden=4, inputs=3, steps=9, gain=[0.5, 2.0],
             input_scale=[0.0, 1.0], seeds=3, seed=7, metrics=["norms", "lyapunov"], k=2)


@pytest.fixture(scope="module")
def small(tmp_path_factory, fast_compile):
    out = tmp_path_factory.mktemp("study") / "small"
    study.run(SMALL, out, progress=False)
    return out


def _sub(code, env_extra=None, timeout=120):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT),
               JAX_DISABLE_MOST_OPTIMIZATIONS="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, timeout=timeout,
                          capture_output=True, text=True)


def test_every_configuration_equals_spectra_and_lyapunov_by_hand(small):
    res = study.read(small)
    assert len(res["configurations"]) == 8 and len(res["records"]) == 8 * 3
    keys = jax.random.split(jax.random.key(7), 3)
    for c in res["configurations"]:
        cell = rd.cells.from_gain(c["cell"], 3, 4, c["gain"], c["activation"] or "tanh")
        sp = rd.spectra(cell, jax.random.key(7), seeds=3, steps=9, input_scale=c["input_scale"])
        a = res["arrays"][c["id"]]
        np.testing.assert_allclose(a["log10_norms"], sp.log10_norms, rtol=1e-6, atol=1e-6)
        # Singular values below float32's resolution of ∂h_T/∂h_1 (σ_i < ~1e-6·σ_1) are rounding
        # noise of the product and differ between two compiled programs; the rest agree.
        sv = np.asarray(sp.singular_values)
        err = np.abs(a["singular_values"] - sv)
        assert np.all(err <= 1e-5 * sv + 1e-6 * sv[:, :1]), (c, err / sv[:, :1])
        ex = []
        for i in range(3):
            p, h1, xs = rd.draw_seed(cell, keys[i], 9, input_scale=c["input_scale"])
            ex.append(rd.lyapunov_spectrum(cell, p, h1, xs, k=2).exponents)
        np.testing.assert_allclose(a["lyapunov"], np.array(ex), atol=2e-5)
        recs = [r for r in res["records"] if r["config_id"] == c["id"]]
        assert [r["seed_index"] for r in recs] == [0, 1, 2]
        np.testing.assert_allclose([r["log10_norm"] for r in recs], sp.log10_norms[:, -1], atol=1e-6)
        np.testing.assert_allclose([r["lambda_max"] for r in recs], np.array(ex)[:, 0], atol=2e-5)
        r = recs[0]
        assert r["config"] == {k: c[k] for k in c if k != "id"} | dict(
            seeds=3, seed=7, metrics=["norms", "lyapunov"], k=2)
        assert r["jax"] == jax.__version__ and r["device_count"] == jax.device_count()
    # the summary's median is the median over seeds of the stored final log10 norms
    line = next(ln for ln in study.summary(res).splitlines() if ln.startswith(c["id"]))
    assert float(line.split()[1]) == pytest.approx(np.median(a["log10_norms"][:, -1]), abs=1e-3)


def test_one_compile_per_shape_and_group_size():
    jitted = study._group_jit(False)
    base = dict(hidden=3, inputs=2, steps=6, seeds=2, metrics=["norms"])
    before = jitted._cache_size()
    # 3 gains × 2 input scales: one group of 6, one compile
    study.run(dict(base, gain=[0.5, 1.0, 1.5], input_scale=[0.5, 1.0]), _tmp("a"), progress=False)
    assert jitted._cache_size() == before + 1
    # 12 other configurations of the same shape: two groups of 6, no new compile
    study.run(dict(base, gain=[0.1, 0.2, 0.3, 0.4, 0.6, 0.7], input_scale=[0.0, 2.0]), _tmp("b"),
              progress=False, group_size=6)
    assert jitted._cache_size() == before + 1


def _tmp(name):
    import tempfile

    return Path(tempfile.mkdtemp()) / name


@pytest.mark.parametrize("config, match", [
    ({"cell": "rnn"}, r"cell: expected one of 'vanilla'.*got 'rnn'"),
    ({"gain": [1.0, -0.5]}, r"gain: expected finite non-negative numbers, got -0.5"),
    ({"seeds": 0}, r"seeds: expected an int >= 1.*got 0"),
    ({"metrics": ["norms", "entropy"]}, r"metrics: expected one of 'norms', 'dense', 'lyapunov'; got 'entropy'"),
    ({"gains": [1.0]}, r"config: unknown key\(s\) 'gains'; the known keys are cell, activation"),
    ({"hidden": 4, "metrics": "lyapunov", "k": 5}, r"k: expected at most the state size.*size 4"),
    ({"steps": 1}, r"steps: expected an int >= 2"),
    ({"gain": [1.0, 1.0]}, r"gain: the value 1.0 is listed twice"),
    ({"cell": "gru", "init": "orthogonal"}, r"init: \['orthogonal'\] apply to vanilla and linear cells only"),
    ({"h1": -1.0}, r"h1: expected finite non-negative numbers, got -1.0"),
    ({"init": "xavier"}, r"init: expected one of 'default', 'orthogonal', 'identity'.*got 'xavier'"),
])
def test_bad_config_is_refused_before_any_computation(config, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        study.run(config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_toml_and_json_configs(tmp_path):
    (tmp_path / "s.toml").write_text('cell = "gru"\nhidden = [4, 5]\ngain = [1, 2.5]\nseeds = 2\n')
    s = study.load_config(tmp_path / "s.toml")
    (tmp_path / "s.json").write_text(json.dumps(s.to_dict()))
    assert study.load_config(tmp_path / "s.json") == s
    assert s.hash == study.Study(cell="gru", hidden=[4, 5], gain=[1.0, 2.5], seeds=2).hash
    assert [c["id"] for c in study.configurations(s)] == [
        "gru-m8-n4-T100-g1.0-x1.0", "gru-m8-n4-T100-g2.5-x1.0",
        "gru-m8-n5-T100-g1.0-x1.0", "gru-m8-n5-T100-g2.5-x1.0"]
    (tmp_path / "bad.toml").write_text("gain = [1, \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        study.load_config(tmp_path / "bad.toml")


def test_one_and_four_devices_give_the_same_numbers_with_split_shards(small, tmp_path):
    out4 = tmp_path / "four"
    proc = _sub(f"""
        import jax, numpy as np
        from rnn_dynamics import study
        assert jax.device_count() == 4
        cfg = {SMALL!r}
        s = study.Study.from_dict(cfg)
        mesh = study._mesh()
        keys = study._seed_keys(s, mesh)                 # 3 seeds padded to 4
        out = study._run_group(s, study._shapes(s)[0], [[0.5, 0.0], [2.0, 1.0]], keys, mesh)
        for name, v in out.items():
            assert v.sharding.spec == jax.sharding.PartitionSpec(None, "seeds"), v.sharding
            shards = v.addressable_shards
            assert len({{sh.device.id for sh in shards}}) == 4
            assert sorted(sh.index[1].start for sh in shards) == [0, 1, 2, 3]
            assert all(sh.data.shape[:2] == (2, 1) for sh in shards)
        study.run(cfg, {str(out4)!r}, progress=False)
        study.run(cfg, {str(out4) + "-b1"!r}, progress=False, batch_size=1)
        print("ok")
    """, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # One seed per chunk on both sides: the same per-seed program, so the singular values and
    # exponents agree bit for bit (the vanilla curve's log10 differs by an ulp or two).
    one_b1 = study.read(study.run(SMALL, tmp_path / "one-b1", progress=False, batch_size=1))
    four_b1 = study.read(str(out4) + "-b1")
    for c in one_b1["configurations"]:
        a, b = one_b1["arrays"][c["id"]], four_b1["arrays"][c["id"]]
        np.testing.assert_array_equal(b["singular_values"], a["singular_values"])
        np.testing.assert_array_equal(b["lyapunov"], a["lyapunov"])
        np.testing.assert_allclose(b["log10_norms"], a["log10_norms"], rtol=0, atol=5e-7)
    one, four = study.read(small), study.read(out4)
    assert [c["id"] for c in one["configurations"]] == [c["id"] for c in four["configurations"]]
    for c in one["configurations"]:
        a, b = one["arrays"][c["id"]], four["arrays"][c["id"]]
        # other loop and batch shapes per device round differently: a few ulps of each result
        np.testing.assert_allclose(b["log10_norms"], a["log10_norms"], rtol=1e-6, atol=1e-6)
        err = np.abs(b["singular_values"] - a["singular_values"]) / a["singular_values"][:, :1]
        assert err.max() < 1e-5, err.max()
        np.testing.assert_allclose(b["lyapunov"], a["lyapunov"], rtol=1e-6, atol=1e-6)
    assert {r["device_count"] for r in four["records"]} == {4}


def _lines(path):
    return Path(path).read_text().splitlines()


def test_dense_metric_is_the_singular_values_of_spectra_without_the_curve(small, tmp_path):
    cfg = dict(SMALL, cell="vanilla", input_scale=1.0, metrics=["dense"])
    res = study.read(study.run(cfg, tmp_path / "dense", progress=False))
    full = study.read(small)
    for c in res["configurations"]:
        a = res["arrays"][c["id"]]
        assert set(a) == {"singular_values"}  # no curve was computed or stored
        cell = rd.cells.from_gain("vanilla", 3, 4, c["gain"], "tanh")
        sv = np.asarray(rd.spectra(cell, jax.random.key(7), seeds=3, steps=9, input_scale=1.0,
                                   curve=False).singular_values)
        err = np.abs(a["singular_values"] - sv)
        assert np.all(err <= 1e-5 * sv + 1e-6 * sv[:, :1]), (c, err / sv[:, :1])
        # the same numbers as the "norms" study's dense part, configuration by configuration
        np.testing.assert_allclose(a["singular_values"], full["arrays"][c["id"]]["singular_values"],
                                   rtol=1e-5, atol=1e-6 * float(sv[:, 0].min()))
    assert all("log10_norm" not in r and r["dense_ok"] for r in res["records"])
    assert "nan" not in study.summary(res).split("\n")[3].split()[1]  # log10|J| from σ_1


def test_initialiser_axis_meets_the_linear_cell_closed_form(tmp_path):
    # W = g·Q (Q orthogonal) or g·I: every singular value of W^(T-1) is g^(T-1) exactly.
    cfg = dict(cell="linear", init=["default", "orthogonal", "identity"], hidden=5, inputs=2,
               steps=9, gain=[0.9, 1.1], seeds=3, metrics=["dense"])
    res = study.read(study.run(cfg, tmp_path / "init", progress=False))
    ids = [c["id"] for c in res["configurations"]]
    assert ids[:2] == ["linear-m2-n5-T9-g0.9-x1.0", "linear-m2-n5-T9-g1.1-x1.0"]  # default: as before
    assert ids[2] == "linear-orthogonal-m2-n5-T9-g0.9-x1.0" and len(set(ids)) == 6
    for c in res["configurations"]:
        sv = res["arrays"][c["id"]]["singular_values"]
        if c["init"] == "default":  # a Gaussian W: singular values spread out
            assert np.all(sv[:, 0] / sv[:, -1] > 1.5)
        else:
            np.testing.assert_allclose(sv, c["gain"] ** 8, rtol=2e-5)
    # a study written without the init key resumes when init is given as its default
    plain = dict(hidden=3, inputs=2, steps=5, seeds=2, metrics=["dense"])
    study.run(plain, tmp_path / "plain", progress=False)
    before = (tmp_path / "plain" / "results.jsonl").read_bytes()
    study.run(dict(plain, init="default"), tmp_path / "plain", progress=False)
    assert (tmp_path / "plain" / "results.jsonl").read_bytes() == before


def test_autonomous_study_from_a_random_h1_equals_spectra_and_lyapunov_by_hand(tmp_path):
    cfg = dict(hidden=4, inputs=2, steps=12, gain=[1.5, 3.0], input_scale=0.0, seeds=3, seed=5,
               metrics=["norms", "lyapunov"], k=2, h1=0.5)
    res = study.read(study.run(cfg, tmp_path / "h1", progress=False))
    keys = jax.random.split(jax.random.key(5), 3)
    for c in res["configurations"]:
        cell = rd.cells.from_gain("vanilla", 2, 4, c["gain"], "tanh")
        sp = rd.spectra(cell, jax.random.key(5), seeds=3, steps=12, input_scale=0.0, h1=0.5)
        a = res["arrays"][c["id"]]
        np.testing.assert_allclose(a["log10_norms"], sp.log10_norms, rtol=1e-5, atol=1e-5)
        for i in range(3):
            p, h1, xs = rd.draw_seed(cell, keys[i], 12, input_scale=0.0, h1=0.5)
            assert float(np.abs(h1).max()) > 0  # not the cell's zero state
            ex = rd.lyapunov_spectrum(cell, p, h1, xs, k=2).exponents
            np.testing.assert_allclose(a["lyapunov"][i], ex, rtol=1e-4, atol=1e-5)
    # from the zero state an autonomous tanh network without bias never leaves 0: the product is
    # W^(T-1) and differs from the driven one above
    zero = study.read(study.run(dict(cfg, h1=0.0), tmp_path / "zero", progress=False))
    c = res["configurations"][1]
    assert not np.allclose(zero["arrays"][c["id"]]["log10_norms"], res["arrays"][c["id"]]["log10_norms"])
    assert res["records"][0]["config"]["h1"] == 0.5 and "h1" not in zero["records"][0]["config"]


def test_killed_study_resumes_to_the_uninterrupted_store(tmp_path):
    cfg = dict(hidden=3, inputs=2, steps=6, gain=[0.5, 1.0, 1.5, 2.0, 2.5], seeds=2, seed=1,
               metrics=["norms", "lyapunov"], k=1)
    killed = tmp_path / "killed"
    proc = _sub(f"""
        import os, signal
        from rnn_dynamics import study
        def on_group(done, total):
            if done == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        study.run({cfg!r}, {str(killed)!r}, progress=False, group_size=1, on_group=on_group)
    """)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert len(_lines(killed / "results.jsonl")) == 2 * 2
    # what a kill in the middle of the next group's write leaves: its arrays, half a record
    ids = [c["id"] for c in study.configurations(cfg)]
    (killed / "arrays" / f"{ids[2]}.npz").write_bytes(b"partial")
    with open(killed / "results.jsonl", "a") as f:
        f.write('{"config_id": "' + ids[2] + '", "seed_ind')
    (killed / "arrays" / f".{ids[3]}.npz.123.tmp").write_bytes(b"")
    study.run(cfg, killed, progress=False, group_size=1)
    fresh = tmp_path / "fresh"
    study.run(cfg, fresh, progress=False)
    assert _lines(killed / "results.jsonl") == _lines(fresh / "results.jsonl")
    recs = [json.loads(x) for x in _lines(killed / "results.jsonl")]
    assert len({(r["config_id"], r["seed_index"]) for r in recs}) == len(recs) == 5 * 2
    assert sorted(p.name for p in (killed / "arrays").iterdir()) == sorted(f"{i}.npz" for i in ids)
    a, b = study.read(killed)["arrays"], study.read(fresh)["arrays"]
    for i in ids:
        for name in b[i]:
            np.testing.assert_array_equal(a[i][name], b[i][name])
    # a finished study reruns without computing or writing anything
    before = (killed / "results.jsonl").stat().st_mtime_ns
    study.run(cfg, killed, progress=False)
    assert (killed / "results.jsonl").stat().st_mtime_ns == before


def test_files_torn_by_a_machine_crash_are_recomputed(tmp_path):
    # Writes are not fsync-ed: after a crash of the machine, a finished configuration's arrays
    # may come back zero-filled or cut short, and results.jsonl may end in NUL bytes.
    cfg = dict(hidden=3, inputs=2, steps=6, gain=[0.5, 1.0, 1.5], seeds=2, seed=1, metrics=["dense"])
    torn, fresh = tmp_path / "torn", tmp_path / "fresh"
    study.run(cfg, torn, progress=False, group_size=1)
    study.run(cfg, fresh, progress=False)
    ids = [c["id"] for c in study.configurations(cfg)]
    zeroed, cut = torn / "arrays" / f"{ids[0]}.npz", torn / "arrays" / f"{ids[2]}.npz"
    zeroed.write_bytes(bytes(zeroed.stat().st_size))
    cut.write_bytes(cut.read_bytes()[:-40])
    with open(torn / "results.jsonl", "ab") as f:
        f.write(bytes(300))
    study.run(cfg, torn, progress=False)
    assert sorted(_lines(torn / "results.jsonl")) == sorted(_lines(fresh / "results.jsonl"))
    a, b = study.read(torn)["arrays"], study.read(fresh)["arrays"]
    assert sorted(a) == sorted(b) == sorted(ids)
    for i in ids:
        np.testing.assert_array_equal(a[i]["singular_values"], b[i]["singular_values"])


def test_a_folder_of_another_study_or_schema_is_refused(small, tmp_path):
    with pytest.raises(ValueError, match=r"holds a different study.*gain: \[0.5, 2.0\] there, \[0.5\] now"):
        study.run(dict(SMALL, gain=[0.5]), small, progress=False)
    other = tmp_path / "v0"
    other.mkdir()
    m = json.loads((small / "study.json").read_text())
    (other / "study.json").write_text(json.dumps(dict(m, schema_version=0)))
    with pytest.raises(ValueError, match="study schema version 0, this rnn_dynamics reads version 1"):
        study.run(SMALL, other, progress=False)


def test_plots_draw_the_stored_numbers(small):
    from rnn_dynamics import _plots_study as plots

    res = study.read(small)
    sel = [c for c in res["configurations"] if c["cell"] == "vanilla" and c["input_scale"] == 1.0]
    fig = plots.study_norms(small, where={"cell": "vanilla", "input_scale": 1.0})
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.lines[:2]] == ["g = 0.5", "g = 2"]
    np.testing.assert_allclose(ax.lines[1].get_ydata(),
                               np.median(res["arrays"][sel[1]["id"]]["log10_norms"], axis=0), rtol=1e-6)
    assert ax.get_xlabel() == "t" and "partial h_t" in ax.get_ylabel()
    fig = plots.study_phase(res, where={"cell": "vanilla", "input_scale": 1.0})
    mesh = fig.axes[0].collections[0]
    Z = np.stack([np.median(res["arrays"][c["id"]]["log10_norms"], axis=0) for c in sel])
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(Z.shape), Z, rtol=1e-6)
    assert fig.axes[0].get_ylabel() == "gain g"
    fig = plots.study_lyapunov(res, where={"cell": "vanilla", "input_scale": 0.0})
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [
        np.median(res["arrays"][c["id"]]["lyapunov"][:, 0]) for c in res["configurations"]
        if c["cell"] == "vanilla" and c["input_scale"] == 0.0], rtol=1e-6)
    # the mean-field curve at g = 2 with no input is rd.theory's 0.1547
    mf = ax.lines[1]
    assert np.interp(2.0, mf.get_xdata(), mf.get_ydata()) == pytest.approx(0.1547, abs=2e-3)
    fig = plots.study_singular_values(res, where={"cell": "vanilla", "input_scale": 1.0})
    assert fig.axes[0].get_xlabel().startswith(r"$\log_{10}")
    # only σ_i above the float32 rounding floor n·ε·σ_max are counted (here n = 4)
    sv = res["arrays"][sel[0]["id"]]["singular_values"]
    share = np.mean(sv >= 4 * 2.0**-23 * sv[:, :1])
    assert 0 < share < 1
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts[0] == f"g = 0.5 ({100 * share:.0f}% resolved)"
    with pytest.raises(ValueError, match="phase diagram needs at least two gains"):
        plots.study_phase(res, where={"cell": "gru", "gain": 0.5, "input_scale": 0.0})


def test_cli_sweep_then_plot(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text('hidden = 3\ninputs = 2\nsteps = 6\ngain = [0.5, 1.5]\nseeds = 2\n'
                   'metrics = ["norms", "lyapunov"]\n')
    out = tmp_path / "out"
    assert rd.cli.main(["sweep", str(cfg), "--out", str(out), "--no-plot", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "2 of 2 configurations, 2 seeds each" in text
    assert rd.cli.main(["plot", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [
        "lyapunov.png", "norms.png", "phase.png", "singular_values.png"]
    cfg.write_text('hidden = 3\ngain = [0.5]\nseed = 1\n')  # another study, same folder
    assert rd.cli.main(["sweep", str(cfg), "--out", str(out), "--no-progress"]) == 2
    assert "holds a different study" in capsys.readouterr().err


def test_two_cpu_devices_do_not_hang_on_decompositions_and_large_shapes_use_one(tmp_path):
    """Batched LAPACK calls on two CPU devices at once hung XLA:CPU (a dense n = 64 or 128 study
    with 16 seeds on 2 host devices sat at 0% CPU); each CPU device now takes its SVDs one at a
    time. Shapes above n = 64 run on one device (whose dots use every core), and say so."""
    out = tmp_path / "two"
    proc = _sub(f"""
        import jax, numpy as np
        from rnn_dynamics import study
        assert jax.device_count() == 2
        cfg = dict(cell="vanilla", hidden=[64, 65], steps=20, gain=[1.0, 1.5], seeds=16,
                   metrics=["dense"])
        study.run(cfg, {str(out)!r}, progress=False)
        res = study.read({str(out)!r})
        used = {{(r["config"]["hidden"], r["device_count"]) for r in res["records"]}}
        assert used == {{(64, 2), (65, 1)}}, used
        print("ok")
    """, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, timeout=150)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_record_lines_equal_json_dumps_of_each_record():
    """The column-wise record writer against records built one by one and given to json.dumps,
    with the edge cases: a zero σ_max, a -inf curve end (an exact zero) and a -inf exponent."""
    s = study.Study.from_dict(dict(hidden=3, steps=6, seeds=4, metrics=["norms", "lyapunov"], k=2))
    c = study.configurations(s)[0]
    rng = np.random.default_rng(0)
    arrays = {"log10_norms": rng.standard_normal((4, 5)).astype(np.float32),
              "singular_values": np.sort(np.abs(rng.standard_normal((4, 3))), 1)[:, ::-1].astype(np.float32),
              "lyapunov": rng.standard_normal((4, 2)).astype(np.float32)}
    arrays["singular_values"][1, 0] = 0.0
    arrays["log10_norms"][2, -1] = -np.inf
    arrays["lyapunov"][3, 0] = -np.inf
    env = rd.store.environment()
    cfg = {k: v for k, v in c.items() if k != "id"}
    cfg.update(seeds=4, seed=s.seed, metrics=list(s.metrics), k=2)
    expected = []
    for i in range(4):
        curve, sv, ex = arrays["log10_norms"][i], arrays["singular_values"][i], arrays["lyapunov"][i]
        ok = bool(np.all(np.isfinite(sv)) and sv[0] > 0)
        fin = lambda v: float(v) if np.isfinite(v) else None
        r = {"config_id": c["id"], "seed_index": i, "study_hash": s.hash,
             "log10_norm": fin(curve[-1]), "growth_rate": fin(10.0 ** (curve[-1] / 5)),
             "dense_ok": ok, "log10_sigma_max": fin(np.log10(sv[0])) if ok else None,
             "log10_sigma_min": fin(np.log10(sv[-1])) if ok else None,
             "lambda_max": fin(ex[0]), "lyapunov_sum": fin(ex.sum()), "config": cfg,
             "rnn_dynamics": env["rnn_dynamics"], "jax": env["jax"], "platform": env["platform"],
             "device_kind": env["device_kind"], "device_count": env["device_count"]}
        expected.append(json.dumps(r, allow_nan=False, separators=(",", ":")) + "\n")
    with np.errstate(divide="ignore"):
        assert study._record_lines(s, study._record_frame(s, c, env), arrays) == expected
