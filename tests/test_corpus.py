"""Corpus sweeps, local engine: the dataset against plain ess_table calls, resumption,
refusals, Parquet schema and metadata, text files, summaries against hand-computed
cases, and the corpus views."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import builtins
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

import ess_widgets  # noqa: E402
from ess_widgets.adapters import load  # noqa: E402
from ess_widgets.corpus import (  # noqa: E402
    around_token_class,
    dip_at_token_class,
    head_distributions,
    head_means,
    read_failures,
    read_sweep,
    read_texts,
    storage,
    sweep,
    sweep_settings,
    token_class_ess,
)
from ess_widgets.corpus import driver as sweep_module  # noqa: E402
from ess_widgets.corpus.compute import normalize_splits  # noqa: E402
from ess_widgets.corpus.summaries import bootstrap_means, head_texts  # noqa: E402
from ess_widgets.corpus.texts import corpus_items  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # the shared tiny model (corpus_models.py)
from corpus_models import CORPUS, tiny_llama_folder  # noqa: E402

TOL = 1e-2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_llama_folder(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def handle(model_dir):
    return load(model_dir)


@pytest.fixture(scope="module")
def full(model_dir, tmp_path_factory):
    """One uninterrupted sweep of CORPUS, shards of 2 texts."""
    out = tmp_path_factory.mktemp("full") / "ess.parquet"
    result = sweep(model_dir, CORPUS, tol=TOL, relative=True, out=out, shard_size=2, progress=False)
    return result


def _run(model_dir, out, **kwargs):
    options = dict(tol=TOL, relative=True, out=out, shard_size=2, progress=False)
    options.update(kwargs)
    return sweep(model_dir, CORPUS, **options)


# ------------------------------------------------------------------ the numbers
def test_rows_equal_plain_ess_table(full, handle):
    """Every text's rows are its ess_table, with text_id and the split's token id added."""
    table = read_sweep(full.path)
    assert full.texts == len(CORPUS) and full.shards == 4 and full.written == 4
    assert list(table.columns) == storage.ess_columns()
    ok = [k for k, t in enumerate(CORPUS) if t != "" and not (isinstance(t, str) and len(t) > 200)]
    assert sorted(table["text_id"].unique()) == ok
    for text_id in ok:
        item = CORPUS[text_id]
        expected = handle.ess_table(item, tol=TOL, relative=True, progress=False)
        got = table[table["text_id"] == text_id].reset_index(drop=True)
        ids = np.asarray(expected.attrs["token_ids"])
        np.testing.assert_array_equal(got["token_id"], ids[expected["split"].to_numpy() - 1])
        for column in expected.columns:
            left = got[column].astype(str) if column in ("kind", "token") else got[column]
            right = (
                expected[column].astype(str) if column in ("kind", "token") else expected[column]
            )
            np.testing.assert_array_equal(left.to_numpy(), right.to_numpy(), err_msg=column)


def test_failures_recorded_and_sweep_goes_on(full):
    failures = read_failures(full.path)
    assert failures["text_id"].tolist() == [2, 4]
    assert failures["error_type"].tolist() == ["ValueError", "ValueError"]
    assert "empty" in failures["error"].iloc[0]
    assert "48" in failures["error"].iloc[1]  # the context length, from the model's own check
    texts = read_texts(full.path)
    assert texts["status"].tolist() == ["ok", "ok", "failed", "ok", "failed", "ok", "ok"]
    assert texts["text"].iloc[0] == CORPUS[0] and texts["text"].isna().iloc[5]
    assert list(texts["token_ids"].iloc[5]) == CORPUS[5]
    assert full.failures == 2


def test_splits_select_rows_of_the_full_table(model_dir, tmp_path, full):
    result = _run(model_dir, tmp_path / "s.parquet", splits=3)
    every = read_sweep(full.path)
    some = read_sweep(result.path)
    for text_id, rows in every.groupby("text_id"):
        L = int(rows["split"].max()) + 1
        keep = normalize_splits(3, L)
        assert L - 1 in keep
        expected = rows[rows["split"].isin(keep)].reset_index(drop=True)
        got = some[some["text_id"] == text_id].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected, check_categorical=False)
    assert sweep_settings(result.path)["splits"] == 3


# ------------------------------------------------------------------ storage
def test_parquet_schema_and_metadata(full, model_dir):
    settings = sweep_settings(full.path)
    assert settings == {
        "model": str(model_dir.resolve()),
        "layers": None,
        "tol": TOL,
        "relative": True,
        "splits": None,
        "shard_size": 2,
        "memory_budget": None,
        "load_options": {},
        "version": ess_widgets.__version__,
    }
    manifest = json.loads((full.path / "_sweep.json").read_text())
    assert manifest["format"] == "ess-widgets sweep" and manifest["settings"] == settings
    schemas = {
        "ess": storage.ess_schema(),
        "texts": storage.TEXTS_SCHEMA,
        "failures": storage.FAILURES_SCHEMA,
    }
    types = {f.name: f.type for f in storage.ess_schema()}
    cols = list(storage.TABLE_COLUMNS)
    k = cols.index("token") + 1
    assert list(types) == ["text_id", *cols[:k], "token_id", *cols[k:]]
    expected = {"text_id": pa.int64(), "layer": pa.int32(), "mixer": pa.string(),
                "kind": pa.string(), "channel": pa.int32(), "split": pa.int32(),
                "token": pa.string(), "token_id": pa.int64(), "tolerance_ess": pa.int32(),
                "entropy_ess": pa.float64(), "bound": pa.int32(), "tss": pa.int64()}  # fmt: skip
    assert types == {k: v for k, v in expected.items() if k in types}
    assert set(expected) - set(types) <= {"mixer"}
    for name, schema in schemas.items():
        parts = sorted((full.path / name).glob("part-*.parquet"))
        assert [p.name for p in parts] == [f"part-{k:05d}.parquet" for k in range(4)]
        for k, part in enumerate(parts):
            read = pq.read_schema(part)
            assert read.remove_metadata().equals(schema), (name, read)
            meta = json.loads(read.metadata[b"ess_widgets.sweep"])
            assert meta["settings"] == settings and meta["version"] == ess_widgets.__version__
            assert meta["table"] == name and meta["shard"] == k and meta["engine"] == "local"
            assert (
                meta["first_text_id"] == 2 * k and meta["rows"] == pq.read_metadata(part).num_rows
            )
            assert len(meta["texts_sha256"]) == 64
    assert not list(full.path.rglob("*.tmp"))


def test_lazy_read_is_an_arrow_dataset(full):
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    ds = read_sweep(full.path, lazy=True)
    assert isinstance(ds, pads.Dataset)
    eager = read_sweep(full.path)
    assert ds.count_rows() == len(eager)
    layer1 = ds.to_table(filter=pc.field("layer") == 1, columns=["entropy_ess"])
    assert layer1.num_rows == int((eager["layer"] == 1).sum())
    part = read_sweep(full.path, columns=["text_id", "layer", "entropy_ess"])
    assert list(part.columns) == ["text_id", "layer", "entropy_ess"]


# ------------------------------------------------------------------ resumption and refusals
class Interrupt(Exception):
    pass


def test_interrupted_sweep_resumes_to_the_same_dataset(model_dir, tmp_path, monkeypatch, full):
    out = tmp_path / "ess.parquet"
    real_write = sweep_module.write_shard
    calls = []

    def write_then_fail(*args, **kwargs):
        if calls:
            raise Interrupt("killed after the first shard")
        calls.append(args[1])
        return real_write(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "write_shard", write_then_fail)
    with pytest.raises(Interrupt):
        _run(model_dir, out)
    assert sorted(storage.written_shards(out)) == [0]
    monkeypatch.setattr(sweep_module, "write_shard", real_write)

    computed = []
    real_compute = sweep_module.compute_shard

    def counting(handle, shard, *args, **kwargs):
        computed.append(shard.index)
        return real_compute(handle, shard, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "compute_shard", counting)
    resumed = _run(model_dir, out)
    assert computed == [1, 2, 3] and resumed.skipped == 1 and resumed.written == 3
    pd.testing.assert_frame_equal(read_sweep(out), read_sweep(full.path))
    pd.testing.assert_frame_equal(read_texts(out), read_texts(full.path))
    pd.testing.assert_frame_equal(read_failures(out), read_failures(full.path))
    again = _run(model_dir, out)  # complete: nothing to do
    assert again.written == 0 and again.skipped == 4


def test_settings_mismatch_refused(model_dir, full):
    before = sorted(p.name for p in full.path.rglob("*"))
    with pytest.raises(ValueError, match=r"other settings.*tol: 0\.01 \(on disk\) vs 0\.1"):
        _run(model_dir, full.path, tol=0.1)
    with pytest.raises(ValueError, match="shard_size"):
        _run(model_dir, full.path, shard_size=3)
    with pytest.raises(ValueError, match="layers"):
        _run(model_dir, full.path, layers=[0])
    assert sorted(p.name for p in full.path.rglob("*")) == before


def test_other_texts_refused_on_resume(model_dir, full):
    texts = list(CORPUS)
    texts[3] = "Another text entirely."
    with pytest.raises(ValueError, match="other texts"):
        sweep(model_dir, texts, tol=TOL, relative=True, out=full.path, shard_size=2, progress=False)
    with pytest.raises(ValueError, match="beyond"):  # a shorter corpus
        sweep(model_dir, CORPUS[:4], tol=TOL, relative=True, out=full.path, shard_size=2,
              progress=False)  # fmt: skip


def test_existing_paths_refused(model_dir, tmp_path, full):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="other data"):
        _run(model_dir, other)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    a_file = tmp_path / "file.parquet"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="existing file"):
        _run(model_dir, a_file)
    with pytest.raises(FileExistsError, match="resume=True"):
        _run(model_dir, full.path, resume=False)
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder is fine
    assert _run(model_dir, empty).written == 4


def test_empty_corpus(model_dir, tmp_path):
    out = tmp_path / "ess.parquet"
    with pytest.raises(ValueError, match="`texts` is empty"):
        sweep(model_dir, [], out=out, progress=False)
    with pytest.raises(ValueError, match="`texts` is empty"):
        sweep(model_dir, iter(()), out=out, progress=False)
    assert not out.exists()


def test_bad_arguments(model_dir, tmp_path):
    out = tmp_path / "x"
    with pytest.raises(ValueError, match="engine"):
        sweep(model_dir, ["a b"], out=out, engine="spark")
    with pytest.raises(ValueError, match="engine='ray' only"):
        sweep(model_dir, ["a b"], out=out, num_gpus=1)
    with pytest.raises(ValueError, match="tol"):
        sweep(model_dir, ["a b"], out=out, tol=-1)
    with pytest.raises(ValueError, match="shard_size"):
        sweep(model_dir, ["a b"], out=out, shard_size=0)
    with pytest.raises(TypeError, match="single string"):
        sweep(model_dir, "a text, not a list", out=out)
    with pytest.raises(TypeError, match="text 1 of `texts`"):
        sweep(model_dir, ["fine", 3.5], out=out, progress=False)
    assert not (out / "ess").exists() or not list((out / "ess").iterdir())


def test_ray_missing_says_how_to_install(model_dir, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install 'ess-widgets\[ray\]'"):
        sweep(model_dir, ["a b c"], out=tmp_path / "r", engine="ray", progress=False)
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ corpus files
def test_txt_and_jsonl_files(model_dir, tmp_path):
    txt = tmp_path / "corpus.txt"
    txt.write_text("First text,\nstill the first.\n\n\nSecond text.\n\nThird.\n", encoding="utf-8")
    assert list(corpus_items(txt)) == ["First text,\nstill the first.", "Second text.", "Third."]
    assert list(corpus_items(str(txt))) == list(corpus_items(txt))
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text('"plain"\n\n{"text": "from an object", "id": 7}\n{"token_ids": [1, 2, 3]}\n')
    assert list(corpus_items(jsonl)) == ["plain", "from an object", (1, 2, 3)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\n{"title": "no text"}\n')
    with pytest.raises(ValueError, match="line 2"):
        list(corpus_items(bad))
    with pytest.raises(ValueError, match=r"\.txt"):
        list(corpus_items(tmp_path / "corpus.csv"))
    with pytest.raises(FileNotFoundError):
        list(corpus_items(tmp_path / "missing.txt"))
    result = sweep(model_dir, txt, out=tmp_path / "t.parquet", progress=False)
    assert result.texts == 3 and read_texts(result.path)["text"].tolist()[1] == "Second text."


# ------------------------------------------------------------------ summaries, by hand
def _frame(rows):
    frame = pd.DataFrame(rows, columns=["text_id", "layer", "channel", "split", "token",
                                        "entropy_ess", "tss"])  # fmt: skip
    frame["token"] = frame["token"].astype("category")
    return frame


HAND = _frame(
    [
        # text 0: head (0, 0) splits 1..3 -> values 1, 3, 2 (mean 2); head (0, 1) 4, 4, 4
        (0, 0, 0, 1, "A", 1.0, 1), (0, 0, 0, 2, ".", 3.0, 2), (0, 0, 0, 3, " b", 2.0, 3),
        (0, 0, 1, 1, "A", 4.0, 1), (0, 0, 1, 2, ".", 4.0, 2), (0, 0, 1, 3, " b", 4.0, 3),
        # text 1: head (0, 0) 5, 7 (mean 6); head (0, 1) 2, 2
        (1, 0, 0, 1, "\n", 5.0, 1), (1, 0, 0, 2, "c", 7.0, 2),
        (1, 0, 1, 1, "\n", 2.0, 1), (1, 0, 1, 2, "c", 2.0, 2),
    ]
)  # fmt: skip


def test_head_means_by_hand():
    means = head_means(HAND, n_boot=4000, seed=1)
    assert means[["layer", "channel"]].values.tolist() == [[0, 0], [0, 1]]
    np.testing.assert_allclose(means["mean"], [(2 + 6) / 2, (4 + 2) / 2])
    # Two texts: a resample's mean is one text's mean or the average of both; with
    # 4000 resamples each single text shows up about 1000 times, so the 95 % interval
    # runs from the lower text's mean to the higher's.
    np.testing.assert_allclose(means["ci_low"], [2, 2])
    np.testing.assert_allclose(means["ci_high"], [6, 4])
    assert means["n_texts"].tolist() == [2, 2]
    util = head_means(HAND, "entropy_ess/tss", n_boot=10)
    # head (0, 0): text 0 -> (1/1 + 3/2 + 2/3) / 3, text 1 -> (5/1 + 7/2) / 2
    np.testing.assert_allclose(util["mean"].iloc[0], ((1 + 1.5 + 2 / 3) / 3 + 8.5 / 2) / 2)
    same = head_means(HAND, n_boot=50, seed=3)
    pd.testing.assert_frame_equal(same, head_means(HAND, n_boot=50, seed=3))  # seeded


def test_bootstrap_against_a_plain_loop():
    rng = np.random.default_rng(0)
    per_text = rng.normal(size=(3, 7))
    mean, low, high = bootstrap_means(per_text, n_boot=300, ci=0.9, seed=5)
    # The same resamples drawn one by one: multinomial counts are draws with replacement.
    counts = np.random.default_rng(5).multinomial(7, np.full(7, 1 / 7), size=300)
    boot = np.array([[np.repeat(row, c).mean() for c in counts] for row in per_text])
    np.testing.assert_allclose(mean, per_text.mean(1))
    np.testing.assert_allclose(low, np.quantile(boot, 0.05, axis=1))
    np.testing.assert_allclose(high, np.quantile(boot, 0.95, axis=1))


def test_token_class_ess_by_hand():
    table = token_class_ess(HAND, ["sentence_end", "newline"], n_boot=2000, seed=0)
    end = table.set_index("class").loc["sentence_end"]
    # only text 0 has a sentence end: at "." the values are 3 and 4 (mean 3.5); the rest
    # of text 0 is 1, 2, 4, 4 (mean 2.75)
    assert end["n_texts"] == 1 and end["n_class"] == 2
    assert end["mean_class"] == pytest.approx(3.5) and end["mean_rest"] == pytest.approx(2.75)
    assert end["ratio"] == pytest.approx(3.5 / 2.75)
    assert end["difference_low"] == pytest.approx(0.75) == end["difference_high"]
    nl = table.set_index("class").loc["newline"]
    assert nl["mean_class"] == pytest.approx(3.5) and nl["mean_rest"] == pytest.approx(4.5)
    by_head = token_class_ess(HAND, "newline", by=["layer", "channel"], n_boot=10)
    np.testing.assert_allclose(by_head["mean_class"], [5, 2])
    np.testing.assert_allclose(by_head["mean_rest"], [7, 2])
    custom = token_class_ess(HAND, {"A": lambda t: t == "A"}, n_boot=10)
    assert custom["mean_class"].iloc[0] == pytest.approx(2.5)  # (1 + 4) / 2
    with pytest.raises(ValueError, match="Unknown token class"):
        token_class_ess(HAND, "commas")


def test_around_token_class_by_hand():
    around = around_token_class(HAND, "sentence_end", offsets=[-1, 0, 1], n_boot=10)
    # per split, mean over heads; text 0: split 1 -> 2.5, split 2 (".") -> 3.5, split 3 -> 3
    at = around[around["anchor"] == "sentence_end"].set_index("offset")
    np.testing.assert_allclose(at.loc[[-1, 0, 1], "mean"], [2.5, 3.5, 3.0])
    assert at["n_anchors"].iloc[0] == 1 and at["n_texts"].iloc[0] == 1
    # the other tokens all sit at an edge of their text: no full window, no anchor
    other = around[around["anchor"] == "other tokens"]
    assert (other["n_anchors"] == 0).all() and other["mean"].isna().all()


LINE = _frame(
    [
        (0, 0, 0, i, "." if i == 4 else f" w{i}", v, i)
        for i, v in enumerate([1, 2, 3, 2, 5, 6, 7], 1)
    ]
)


def test_dip_at_token_class_by_hand():
    dip = dip_at_token_class(LINE, "sentence_end", half_width=1, n_boot=10).set_index("anchor")
    # split 4 ("."): 2 / mean(3, 5) = 0.5
    assert dip.loc["sentence_end", "ratio"] == pytest.approx(0.5)
    assert dip.loc["sentence_end", "below"] == 1.0
    # other tokens with both neighbours: splits 2, 3, 5, 6 -> 2/2, 3/2, 5/4, 6/6
    assert dip.loc["other tokens", "ratio"] == pytest.approx((1 + 1.5 + 1.25 + 1) / 4)
    assert dip.loc["other tokens", "n_anchors"] == 4 and dip.loc["other tokens", "below"] == 0
    around = around_token_class(LINE, "sentence_end", offsets=[-1, 0, 1], n_boot=10)
    other = around[around["anchor"] == "other tokens"].set_index("offset")["mean"]
    # windows of splits 2, 3, 5, 6 at offset -1: 1, 2, 2, 5
    assert other.loc[-1] == pytest.approx((1 + 2 + 2 + 5) / 4)


def test_head_distributions_and_texts_by_hand():
    dists = head_distributions(HAND, "entropy_ess")
    np.testing.assert_allclose(dists["q50"], [4.0, 3.0])  # medians of (2, 6) and (4, 2)
    np.testing.assert_allclose(dists["q10"], [2.4, 2.2])
    assert dists["rank"].tolist() == [1, 0]
    top = head_texts(HAND, 0, 0, n=5)
    assert top["text_id"].tolist() == [1, 0] and top["mean"].tolist() == [6.0, 2.0]
    assert top["difference"].tolist() == [2.0, -2.0]


# ------------------------------------------------------------------ views
def test_views_build_with_the_right_fields():
    from ess_widgets.corpus import views

    heat = views.head_heatmap(head_means(HAND, n_boot=20)).to_dict()
    assert heat["encoding"]["x"]["field"] == "channel" and heat["encoding"]["y"]["field"] == "layer"
    assert heat["encoding"]["color"]["field"] == "mean"
    assert heat["params"][0]["name"] == "cell"
    assert heat["params"][0]["select"]["fields"] == ["layer", "channel"]
    values = heat["datasets"][heat["data"]["name"]]
    assert {(v["layer"], v["channel"]) for v in values} == {(0, 0), (0, 1)}

    dist = views.head_distribution_chart(head_distributions(HAND)).to_dict()
    fields = {layer["encoding"]["y"]["field"] for layer in dist["layer"]}
    assert fields == {"q10", "q25", "q50"}
    assert dist["layer"][0]["encoding"]["y2"]["field"] == "q90"

    around = around_token_class(HAND, "sentence_end", offsets=[-1, 0, 1], n_boot=10)
    spec = views.around_chart(around).to_dict()
    band, line = spec["layer"][1], spec["layer"][2]
    assert (
        band["encoding"]["y"]["field"] == "ci_low" and band["encoding"]["y2"]["field"] == "ci_high"
    )
    assert line["encoding"]["y"]["field"] == "mean" and line["encoding"]["x"]["field"] == "offset"

    tc = views.token_class_chart(token_class_ess(HAND, ["sentence_end", "newline"], n_boot=10))
    spec = tc.to_dict()
    assert spec["layer"][1]["encoding"]["x"]["field"] == "ratio_low"
    assert spec["layer"][2]["encoding"]["x"]["field"] == "ratio"
    with pytest.raises(ValueError, match="head_means"):
        views.head_heatmap(HAND)


def test_docstring_corpus_is_reproducible():
    from ess_widgets.corpus.sources import python_docstrings

    ten = python_docstrings(10, with_names=True)
    assert python_docstrings(4, with_names=True) == ten[:4]
    assert all(120 <= len(text) <= 400 and ">>>" not in text for _, text in ten)
    assert len({name for name, _ in ten}) == 10
