"""The shipped results of the paper's other experiments: consistent with the shipped models,
and every correlation quoted in the README recomputed from the shipped CSVs."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ess_widgets.models.experiment import FRESH_SEED, measure_batch
from ess_widgets.models.paper import correlations, load_task_model, paper_path, task_model_names
from ess_widgets.tasks import make_batch

stats = pytest.importorskip("scipy.stats")
README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _csv(name):
    path = paper_path(name)
    assert path.exists(), f"{path.name} is not shipped: run scripts/paper_experiments.py"
    return pd.read_csv(path)


def test_correlations_match_scipy():
    g = np.random.default_rng(0)
    frame = pd.DataFrame({"x": g.normal(size=12), "y": g.normal(size=12)})
    frame.loc[3, "x"] = frame.loc[4, "x"]  # a tie: average ranks, as scipy
    got = correlations(frame, "y", ["x"]).iloc[0]
    assert got.spearman == pytest.approx(stats.spearmanr(frame.x, frame.y)[0], abs=1e-12)
    assert got.pearson == pytest.approx(stats.pearsonr(frame.x, frame.y)[0], abs=1e-12)
    const = correlations(frame.assign(x=1.0), "y", ["x"]).iloc[0]
    assert np.isnan(const.spearman) and np.isnan(const.pearson)


def test_distill_correlations_recomputed():
    dist, shipped = _csv("distill_results"), _csv("distill_correlations")
    assert len(dist) >= 8  # at least 8 teachers
    assert dist.teacher_family.nunique() >= 3
    for row in shipped.itertuples():
        x, y = dist[row.measure], dist["distill_loss"]
        assert row.n == len(dist)
        assert row.spearman == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-6)
        assert row.pearson == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-6)
        assert row.spearman_p == pytest.approx(stats.spearmanr(x, y)[1], rel=1e-6)


def test_teacher_measures_are_those_of_notebook_04():
    dist = _csv("distill_results")
    mqar = pd.read_csv(paper_path("tasks_results").parent.parent / "mqar_results.csv")
    mqar = mqar.set_index("name")
    for row in dist.itertuples():
        assert row.teacher_total_ess_ent == pytest.approx(mqar.loc[row.teacher, "total_ess_ent"])
        assert row.teacher_total_tss == pytest.approx(mqar.loc[row.teacher, "total_tss"])


def test_task_results_and_shipped_models_agree():
    # every shipped task model is in one results CSV: the tasks grid or the harder copying
    results = pd.concat([_csv("tasks_results"), _csv("copy_hard_results")], ignore_index=True)
    assert set(results.name) == set(task_model_names()) and results.name.is_unique
    for col in ("ess_tol", "ess_ent", "tss"):
        np.testing.assert_allclose(
            results[f"{col}_per_kv"], results[col] / results.num_items, rtol=1e-4
        )


@pytest.mark.parametrize("index", [0, -1])
def test_task_model_remeasured(index):
    # Re-measure one shipped model from its float16 weights on the recorded data: the
    # CSV was measured on the float32 model before saving, so equal up to that rounding.
    results = _csv("tasks_results")
    row = results.iloc[index]
    torch.set_num_threads(1)
    model, rec = load_task_model(row["name"], with_record=True)
    batch = make_batch(
        rec["task"],
        256,
        num_items=rec["num_items"],
        seq_len=rec["seq_len"],
        vocab_size=rec["vocab_size"],
        seed=FRESH_SEED,
    )
    got = measure_batch(model, batch, num_items=rec["num_items"])
    assert got["accuracy"] == pytest.approx(row.accuracy, abs=0.03)
    assert got["ess_ent"] == pytest.approx(row.ess_ent, rel=0.05)
    assert got["tss"] == row.tss


# Every correlation the README's "What the paper found, measured here" table quotes:
# (csv, y, measure, group filter, statistic) -> the value as printed in the README.
_COMP = (("task", "compression"),)
_COPY = (("task", "selective_copying"),)
QUOTED = {
    ("tasks_results", "accuracy", "ess_tol_per_kv", _COMP, "spearman"): 0.75,
    ("tasks_results", "accuracy", "ess_tol_per_kv", _COMP, "pearson"): 0.72,
    ("tasks_results", "accuracy", "ess_ent_per_kv", _COMP, "spearman"): 0.66,
    ("tasks_results", "accuracy", "ess_ent_per_kv", _COMP, "pearson"): 0.69,
    ("tasks_results", "accuracy", "tss_per_kv", _COMP, "spearman"): 0.73,
    ("tasks_results", "accuracy", "tss_per_kv", _COMP, "pearson"): 0.65,
    ("tasks_results", "accuracy", "ess_tol_per_kv", _COPY, "spearman"): -0.12,
    ("tasks_results", "accuracy", "ess_ent_per_kv", _COPY, "spearman"): -0.13,
    ("tasks_results", "accuracy", "tss_per_kv", _COPY, "spearman"): -0.05,
    ("copy_hard_results", "accuracy", "ess_tol_per_kv", (), "spearman"): 0.20,
    ("copy_hard_results", "accuracy", "ess_tol_per_kv", (), "pearson"): 0.16,
    ("copy_hard_results", "accuracy", "ess_ent_per_kv", (), "spearman"): 0.33,
    ("copy_hard_results", "accuracy", "ess_ent_per_kv", (), "pearson"): 0.18,
    ("copy_hard_results", "accuracy", "tss_per_kv", (), "spearman"): -0.15,
    ("copy_hard_results", "accuracy", "tss_per_kv", (), "pearson"): -0.61,
    ("distill_results", "distill_loss", "teacher_ess_ent", (), "spearman"): 0.65,
    ("distill_results", "distill_loss", "teacher_ess_ent", (), "pearson"): 0.59,
    ("distill_results", "distill_loss", "teacher_ess_tol", (), "spearman"): 0.60,
    ("distill_results", "distill_loss", "teacher_ess_tol", (), "pearson"): 0.53,
    ("distill_results", "distill_loss", "teacher_tss", (), "spearman"): 0.18,
    ("distill_results", "distill_loss", "teacher_tss", (), "pearson"): 0.04,
    ("distill_results", "distill_loss", "teacher_total_ess_ent", (), "spearman"): -0.03,
    ("distill_results", "distill_loss", "teacher_total_ess_ent", (), "pearson"): -0.41,
    ("distill_results", "distill_loss", "teacher_total_tss", (), "spearman"): -0.22,
    ("distill_results", "distill_loss", "teacher_total_tss", (), "pearson"): -0.37,
    ("distill_results", "distill_loss", "teacher_accuracy", (), "spearman"): 0.62,
    ("distill_results", "distill_loss", "teacher_accuracy", (), "pearson"): 0.79,
}


def _recompute(csv, y, measure, group, stat):
    frame = pd.read_csv(paper_path(csv))
    for key, value in group.items():
        frame = frame[frame[key] == value]
    return correlations(frame, y, [measure]).iloc[0][stat]


@pytest.mark.parametrize(
    "key", list(QUOTED), ids=[f"{k[0]}-{k[2]}-{dict(k[3]).get('task', '')}-{k[4]}" for k in QUOTED]
)
def test_readme_correlations_recomputed(key):
    csv, y, measure, group, stat = key
    group = dict(group)
    quoted = QUOTED[key]
    assert f"{quoted:.2f}" == f"{_recompute(csv, y, measure, group, stat):.2f}"
    assert re.search(re.escape(f"{quoted:.2f}"), README), f"{quoted:.2f} not in the README"


def _row(frame, **where):
    for key, value in where.items():
        frame = frame[frame[key] == value]
    assert len(frame) == 1, where
    return frame.iloc[0]


def test_readme_regularizer_and_init_numbers():
    # the other numbers of the README table, read back from the shipped CSVs
    reg = _csv("regularizer_results")
    assert f"{_row(reg, family='gla', state=16, reg_lambda=0.0).utilization:.2f}" == "0.47"
    assert f"{_row(reg, family='wla', state=16, reg_lambda=0.0).utilization:.2f}" == "0.41"
    wla = [_row(reg, family="wla", state=16, reg_lambda=lam) for lam in (0.0, 1.0, 10.0)]
    assert [f"{r.ess_ent:.2f}" for r in wla] == ["3.14", "3.49", "3.77"]
    assert [f"{r.accuracy:.2f}" for r in wla] == ["0.37", "0.40", "0.45"]
    assert all(r.regime == "collapsed" for r in wla)
    assert f"{_row(reg, family='gla', state=16, reg_lambda=10.0).accuracy:.2f}" == "0.35"
    init = _csv("init_results")
    trained = init[(init.family == "gla") & (init.stage == "trained")]
    s6 = trained[trained.init == "s6"].sort_values("tss").ess_ent
    gla = trained[trained.init == "gla"].sort_values("tss").ess_ent
    assert [f"{s6.iloc[0]:.2f}", f"{s6.iloc[-1]:.2f}"] == ["1.43", "1.74"]
    assert [f"{gla.iloc[0]:.2f}", f"{gla.iloc[-1]:.2f}"] == ["1.58", "3.87"]
    tasks = _csv("tasks_results")
    assert (tasks[tasks.state == 2].regime == "saturated").sum() == 8
    hard = _csv("copy_hard_results")
    recurrent = hard[hard.family != "sa"]
    assert len(hard) == 17 and (hard.num_items == 12).all() and (hard.seq_len == 48).all()
    assert f"{recurrent.accuracy.min():.2f}-{recurrent.accuracy.max():.3f}" == "0.90-0.997"
    assert f"{hard[hard.family == 'sa'].accuracy.iloc[0]:.2f}" == "0.15"
    assert f"{hard.train_cpu_seconds.sum():.0f}" == "610"
    assert hard.train_steps.min() == 900 and hard.train_steps.max() == 2000
    for text in (
        "1.43 -> 1.74",
        "1.58 -> 3.87",
        "3.14 / 3.49 / 3.77",
        "0.47 (GLA",
        "0.90-0.997",
        "610 CPU-seconds",
        "900-2000 steps",
    ):
        assert text in README, text
