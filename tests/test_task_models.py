"""The shipped selective-copying and compression models: built-ins by name, their records,
their operators (the model's own), their text format, and the explorer on their task."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

import ess_widgets
from ess_widgets.adapters.task_models import TaskModelHandle
from ess_widgets.models.paper import load_task_model, task_model_names
from ess_widgets.tasks import format_copy, make_batch

NAMES = task_model_names()
pytestmark = pytest.mark.skipif(not NAMES, reason="no task models shipped")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_listed_as_builtins_with_their_record():
    names = ess_widgets.builtin_models()
    assert set(NAMES) <= set(names)
    assert {n.split("-")[0] for n in NAMES} <= {"copy", "compress"}
    for name in NAMES:
        _, rec = load_task_model(name, with_record=True)
        assert rec["name"] == name
        assert (
            rec["task"]
            == {"copy": "selective_copying", "compress": "compression"}[name.split("-")[0]]
        )
        for key in ("reg_lambda", "init", "distill", "steps_run", "train_accuracy", "seed"):
            assert key in rec, key


@pytest.mark.parametrize("name", [n for n in NAMES if n.split("-")[1] in ("gla", "s6")][:2])
def test_handle_operators_are_the_models_own(name):
    h = ess_widgets.load(name)
    assert isinstance(h, TaskModelHandle) and h.name == name
    batch = h.example(seed=3)
    ids = batch.inputs[0]
    for layer in range(h.num_layers):
        ops = h.operators(ids, layer)
        ref = h.model.layer_operators(ids[None])[layer]
        torch.testing.assert_close(ops.dense(), ref.dense()[0], rtol=0, atol=0)
        assert ops.tokens == tuple(format_copy(ids, h.vocab_size).split())


def test_recorded_accuracy_reproduces():
    # held-out accuracy in the record (256 sequences, seed 10_000) recomputed from the
    # float16 weights: equal up to the rounding of the weights.
    for name in NAMES[:3]:
        model, rec = load_task_model(name, with_record=True)
        b = make_batch(
            rec["task"],
            256,
            num_items=rec["num_items"],
            seq_len=rec["seq_len"],
            vocab_size=rec["vocab_size"],
            seed=10_000 + rec["seed"],
        )
        with torch.no_grad():
            pred = model(b.inputs).argmax(-1)
        acc = float((pred[b.query_mask] == b.targets[b.query_mask]).double().mean())
        assert acc == pytest.approx(rec["train_accuracy"], abs=0.02), name


def test_text_round_trip_and_errors():
    h = ess_widgets.load(NAMES[0])
    text = h.default_text
    assert "|" in text and text.split()[0] in {"_", *(f"d{i}" for i in range(1, 15))}
    assert h.format(h.encode(text).ids) == text
    with pytest.raises(ValueError, match="Unknown token"):
        h.encode("d1 k3")


def test_explorer_opens_a_task_model():
    pytest.importorskip("ipywidgets")
    from ess_widgets.app import Explorer

    ex = Explorer(model=NAMES[0], layer=0, tol=1e-2).wait(300)
    assert ex.error == "", ex.error
    assert ex.text == ex.handle.default_text
    d = ex.layer_data()
    ops = ex.handle.operators(ex.text, 0)
    np.testing.assert_allclose(d.spectra, ops.spectra().numpy(), rtol=1e-12, atol=1e-12)
    assert "|" in d.tokens
