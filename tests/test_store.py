"""The results schema and the file writers of rnn_dynamics.store."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from rnn_dynamics import store


def _spectrum_results(seeds=2, **config):
    res = store.new_results({"cell": "vanilla", "seeds": seeds, "steps": 3, "gain": [1.0], **config})
    res["runs"].append({
        "label": "g=1", "gain": 1.0, "seconds": 0.5,
        "log10_norm": np.array([np.nan, -1.5], np.float32),
        "growth_rate": [np.inf, 0.3], "dense_ok": np.array([False, True]),
        "singular_values": np.array([[np.inf, 1.0], [2.0, 0.5]]),
        "log10_norms": np.array([[0.1, -np.inf], [0.2, -1.5]]),
    })
    return res


def _refuse_constant(name):
    raise AssertionError(f"non-standard JSON constant {name} in the file")


def test_non_finite_numbers_are_null_and_the_file_is_strict_json(tmp_path):
    path = store.save_results(tmp_path / "r.json", _spectrum_results())
    raw = json.loads(path.read_text(), parse_constant=_refuse_constant)
    run = raw["runs"][0]
    assert run["log10_norm"] == [None, -1.5]
    assert run["growth_rate"] == [None, 0.3]
    assert run["log10_norms"] == [[0.1, None], [0.2, -1.5]]
    assert run["dense_ok"] == [False, True]
    back = store.load_results(path, "spectrum")
    np.testing.assert_array_equal(np.asarray(back["runs"][0]["singular_values"], float),
                                  [[np.nan, 1.0], [2.0, 0.5]])
    assert back["schema_version"] == store.SCHEMA_VERSION and back["config"]["gain"] == [1.0]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)], ids=["022", "002"])
def test_files_get_the_usual_permissions(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        a = store.save_json(tmp_path / "a.json", {"x": 1})
        b = store.append_jsonl(tmp_path / "b.jsonl", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(a.stat().st_mode) == mode
    assert stat.S_IMODE(b.stat().st_mode) == mode


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = store.save_json(tmp_path / "r.json", {"version": "old"})

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(store.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        store.save_json(path, {"version": "new"})
    assert json.loads(path.read_text()) == {"version": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.update(schema_version=2), "schema version 2, but this rnn_dynamics reads version 1"),
        (lambda r: r.update(schema_version=0), "schema version 0, but this rnn_dynamics reads version 1"),
        (lambda r: r.pop("schema"), "not an rnn_dynamics results file"),
        (lambda r: r.update(kind="lyapunov"), "holds a 'lyapunov' study, expected a 'spectrum' study"),
        (lambda r: r["runs"][0].pop("log10_norms"), "run 0 lacks log10_norms"),
        (lambda r: r["config"].update(seeds=3), "should hold one entry per seed (3), got 2"),
    ],
    ids=["newer", "older", "unversioned", "other-kind", "missing-field", "seed-count"],
)
def test_load_results_refuses_other_schemas_kinds_and_damage(tmp_path, edit, message):
    res = store.to_json(_spectrum_results())
    edit(res)
    path = store.save_json(tmp_path / "results.json", res)
    with pytest.raises(ValueError) as e:
        store.load_results(tmp_path, "spectrum")  # a folder means its results.json
    assert message in str(e.value) and str(path) in str(e.value)


def test_jsonl_one_strict_line_per_record(tmp_path):
    path = tmp_path / "runs.jsonl"
    store.append_jsonl(path, {"gain": 0.5, "value": np.float32(np.nan)})
    store.append_jsonl(path, {"gain": 1.0, "value": np.arange(2)})
    lines = path.read_text().splitlines()
    assert [json.loads(s, parse_constant=_refuse_constant) for s in lines] == [
        {"gain": 0.5, "value": None}, {"gain": 1.0, "value": [0, 1]}]
    with open(path, "a") as f:
        f.write('{"gain": 2.0, "val')  # a writer killed mid-line
    assert [r["gain"] for r in store.read_jsonl(path)] == [0.5, 1.0]


def test_save_jsonl_writes_strict_json_lines_atomically(tmp_path):
    path = store.save_jsonl(tmp_path / "log.jsonl", [{"a": 1.0}, {"a": float("nan"), "b": float("inf")}])
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"a": 1.0}, {"a": None, "b": None}]
    store.save_jsonl(path, [{"a": 2}])  # a rewrite replaces the whole file
    assert store.read_jsonl(path) == [{"a": 2}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]  # no temporary left


def test_npz_bytes_reads_back_with_np_load_and_matches_np_savez_members():
    import io
    import zipfile

    arrays = {"seed_index": np.arange(5), "sv": np.linspace(3, 0, 10, dtype=np.float32).reshape(5, 2),
              "empty": np.zeros((0, 3)), "edge": np.array([[1.5, np.nan], [np.inf, -0.0]]),
              "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)), "flag": np.array([True, False])}
    data = store.npz_bytes(arrays)
    assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None  # every member's CRC checks out
    with np.load(io.BytesIO(data)) as z:
        assert list(z.keys()) == list(arrays)
        for name, a in arrays.items():
            assert z[name].dtype == a.dtype and z[name].shape == a.shape
            np.testing.assert_array_equal(z[name], a)
    ref = io.BytesIO()
    np.savez(ref, **arrays)
    ours, theirs = zipfile.ZipFile(io.BytesIO(data)), zipfile.ZipFile(ref)
    assert ours.namelist() == theirs.namelist()
    assert all(ours.read(n) == theirs.read(n) for n in ours.namelist())
    with pytest.raises(TypeError, match="'o' holds Python objects"):
        store.npz_bytes({"o": np.array([{}], dtype=object)})
