"""The handle interface: splits, estimates and time limits, one forward pass, the loader's
cache, and the bad inputs a hostile probe found (each failed on the old code)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import transformers as tf

import ess_widgets
import ess_widgets.adapters as adapters
from ess_widgets.adapters import estimate as estimate_module
from ess_widgets.adapters.table import layer_frame, token_dtype
from ess_widgets.models import mqar_model_names

V = 64
MiB = 2**20


def tiny_gpt2():
    torch.manual_seed(0)
    cfg = tf.GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=V, n_positions=64)
    return tf.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")


def tiny_mamba():
    torch.manual_seed(0)
    cfg = tf.MambaConfig(
        num_hidden_layers=2, hidden_size=16, intermediate_size=32, state_size=4, vocab_size=V
    )
    return tf.AutoModelForCausalLM.from_config(cfg)


@pytest.fixture(scope="module")
def gpt2():
    return adapters.load(tiny_gpt2())


@pytest.fixture(scope="module")
def mamba():
    return adapters.load(tiny_mamba())


IDS = list(range(1, 25))  # L = 24


# ------------------------------------------------------------------ the interface
def test_both_handles_are_one_interface(gpt2):
    mqar = ess_widgets.load(mqar_model_names()[0])
    for handle in (gpt2, mqar):
        assert isinstance(handle, adapters.OperatorHandle)
        assert isinstance(handle.default_text, str) and handle.default_text
        assert handle.mixers(0) and handle.num_channels(0) >= 1
        assert handle.channel_label(0) in ("head", "channel")
    # MQARHandle no longer borrows ModelHandle's methods nor copies ess_table
    for name in ("ess_table", "operators", "_layer_index", "_layer_list", "encode"):
        assert name not in vars(adapters.MQARHandle) and name not in vars(adapters.ModelHandle)


def test_layer_operators_records_every_layer_in_one_forward_pass(gpt2):
    calls = []
    hook = gpt2.model.register_forward_pre_hook(lambda m, a: calls.append(1))
    base = gpt2.model.base_model.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        ops = gpt2.layer_operators(IDS)
    finally:
        hook.remove()
        base.remove()
    assert list(ops) == [(0, "attention"), (1, "attention")] and len(calls) == 1
    with torch.no_grad():
        maps = gpt2.model(torch.tensor(IDS)[None], output_attentions=True).attentions
    for layer in range(2):
        torch.testing.assert_close(ops[(layer, "attention")].dense(), maps[layer][0])


# ------------------------------------------------------------------------ splits
def test_splits_select_rows_of_the_full_computation(mamba):
    ops = mamba.operators(IDS, 1)
    full = ops.spectra()
    picked = ops.spectra(splits=[7, 2, 23])
    torch.testing.assert_close(picked, full[:, [6, 1, 22]], rtol=0, atol=0)
    torch.testing.assert_close(ops.spectra(splits=5), full[:, [0, 5, 10, 15, 20, 22]])
    torch.testing.assert_close(ops.spectra(splits=range(3, 6)), full[:, 2:5])
    for bad in (0, [0, 3], [24], [], [1.5], "x", -2):
        with pytest.raises(ValueError, match="splits"):
            ops.spectra(splits=bad)


def test_ess_table_splits_are_rows_of_the_full_table(gpt2, mamba):
    for handle in (gpt2, mamba):
        full = handle.ess_table(IDS, tol=1e-3, progress=False)
        part = handle.ess_table(IDS, tol=1e-3, splits=4, progress=False)
        assert sorted(set(part["split"])) == [1, 5, 9, 13, 17, 21, 23]
        assert part.attrs["splits"] == [1, 5, 9, 13, 17, 21, 23]
        keys = ["layer", "mixer", "channel", "split"]
        merged = part.merge(full, on=keys, suffixes=("", "_full"))
        assert len(merged) == len(part)
        for column in ("tolerance_ess", "entropy_ess", "bound", "tss", "token"):
            assert (merged[column].astype(str) == merged[f"{column}_full"].astype(str)).all()


# --------------------------------------------------------------- time estimates
def test_estimate_never_runs_the_model_and_scales_with_the_work(gpt2, mamba):
    calls = []
    hook = gpt2.model.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        est = gpt2.estimate(IDS)
        every4 = gpt2.estimate(IDS, splits=4)
        one_layer = gpt2.estimate(IDS, layers=0)
        longer = gpt2.estimate(96)  # a length works as well as an input
    finally:
        hook.remove()
    assert calls == []
    assert est["seconds"] > 0 and est["bytes"] > 0 and est["splits"] == 23
    assert every4["seconds"] < est["seconds"] / 2
    assert one_layer["seconds"] == pytest.approx(est["seconds"] / 2)
    # dense cost ~ per-split latency + sum over splits of min^2 max: between 4x and 256x
    assert 4 < longer["seconds"] / est["seconds"] < 260
    units = estimate_module.dense_units(24, range(1, 24))
    assert units == 24**3 + sum(min(i, 24 - i) ** 2 * max(i, 24 - i) for i in range(1, 24))
    ssm = mamba.estimate(IDS, layers=0)
    per_split, per_unit = estimate_module.calibrate("recurrence")
    assert ssm["per_layer"][(0, "ssm")] == pytest.approx(
        32 * (23 * per_split + (24 * 16 + 23 * 64) * per_unit)
    )


def test_work_over_max_seconds_is_refused_with_the_options(gpt2):
    with pytest.raises(ValueError, match=r"estimated.*max_seconds.*layers=.*splits=.*GPU"):
        gpt2.ess_table(IDS, max_seconds=1e-9, progress=False)
    with pytest.raises(ValueError, match=r"estimated"):
        gpt2.operators(IDS, 0, max_seconds=1e-9)
    mqar = ess_widgets.load(mqar_model_names()[0])
    with pytest.raises(ValueError, match=r"estimated"):
        mqar.ess_table(mqar.default_text, max_seconds=1e-9, progress=False)
    assert len(gpt2.ess_table(IDS, max_seconds=None, progress=False)) == 2 * 2 * 23
    with pytest.raises(TypeError, match="max_seconds"):
        gpt2.ess_table(IDS, max_seconds="1", progress=False)
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="max_seconds"):
            gpt2.ess_table(IDS, max_seconds=bad, progress=False)


def test_long_work_is_announced(gpt2, monkeypatch, caplog):
    monkeypatch.setattr(estimate_module, "WARN_SECONDS", 0.0)
    with caplog.at_level("WARNING", logger="ess_widgets"):
        gpt2.ess_table(IDS, layers=0, progress=False)
    assert "estimated" in caplog.text


def test_progress_counts_channels_within_a_layer(mamba):
    ops = mamba.operators(IDS, 0)
    steps = []
    frame = layer_frame(
        ops,
        tol=1e-3,
        relative=False,
        tokens=token_dtype(ops.tokens),
        progress=steps.append,
        chunks=5,
    )
    assert steps == [7, 7, 7, 7, 4] and sum(steps) == ops.num_channels == 32
    whole = ops.tolerance_ess(1e-3).reshape(-1).numpy()
    np.testing.assert_array_equal(frame["tolerance_ess"].to_numpy(), whole)


# ---------------------------------------------------------------------- loading
def test_load_returns_the_same_handle_for_a_builtin_name_and_a_handle_as_is():
    name = mqar_model_names()[0]
    first = ess_widgets.load(name)
    assert ess_widgets.load(name) is first
    assert ess_widgets.load(first) is first


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_blank_name_is_a_value_error(name):
    # the old code loaded whatever model was in the current folder
    with pytest.raises(ValueError, match="blank name"):
        ess_widgets.load(name)


def test_mqar_safetensors_file_loads_through_load(tmp_path):
    from ess_widgets.models import MQARConfig, MQARModel, save_model

    model = MQARModel(MQARConfig("gla", state=4, vocab_size=16, d_model=8))
    path = tmp_path / "tiny.safetensors"
    save_model(model, path, {"num_pairs": 2, "seq_len": 12})
    handle = ess_widgets.load(str(path))
    assert isinstance(handle, adapters.MQARHandle) and handle.record["num_pairs"] == 2


# ------------------------------------------------------------------- bad inputs
def test_relative_must_be_a_bool(gpt2):
    with pytest.raises(TypeError, match="relative"):
        gpt2.ess_table(IDS, relative="no", progress=False)
    with pytest.raises(TypeError, match="relative"):
        gpt2.operators(IDS, 0).tolerance_ess(1e-3, relative="no")
    with pytest.raises(TypeError):
        gpt2.ess_table(IDS, None, 1e-3)  # tol and relative are keyword-only


def test_bytes_and_unsigned_ids(gpt2):
    with pytest.raises(TypeError, match=r"inputs.*decode"):
        gpt2.ess_table(b"hi", progress=False)
    with pytest.raises(TypeError, match="inputs"):
        gpt2.encode(np.array(["a", "b"]))
    as_int = gpt2.ess_table(IDS, progress=False)
    for ids in (np.array(IDS, dtype=np.uint64), torch.tensor(IDS, dtype=torch.uint64)):
        assert gpt2.ess_table(ids, progress=False).equals(as_int)
    with pytest.raises(ValueError, match="inputs"):
        gpt2.encode(np.array([1, 2**64 - 1], dtype=np.uint64))


def test_empty_channel_selection(mamba):
    ops = mamba.operators(IDS, 0)
    with pytest.raises(ValueError, match="channels"):
        ops.dense(channels=[])


def test_huge_mqar_key_is_a_value_error():
    handle = ess_widgets.load(mqar_model_names()[0])
    with pytest.raises(ValueError, match="5000 digits"):
        handle.encode("k" + "9" * 5000 + " v1")


def test_small_budget_fits_a_short_input_on_a_tiny_ssm():
    # the old estimate added a fixed 256 MiB: a 200 MiB budget refused 10 tokens
    handle = adapters.load(tiny_mamba(), memory_budget=200 * MiB)
    table = handle.ess_table(list(range(1, 11)), progress=False)
    assert len(table) == 2 * 32 * 9
    assert handle.estimate(10)["bytes"] < 1 * MiB


def test_calibration_fit_recovers_known_costs():
    # t = 2 ms per split + 1 ns per unit, at two sizes
    samples = [(n, u, 2e-3 * n + 1e-9 * u) for n, u in ((47, 2e6), (159, 9e7))]
    per_split, per_unit = estimate_module._fit(samples)
    assert per_split == pytest.approx(2e-3) and per_unit == pytest.approx(1e-9)
    # noise that would make a term negative puts the larger time in the other term
    assert estimate_module._fit([(10, 1e6, 1.0), (20, 4e6, 1.0)]) == (1.0 / 20, 0.0)
    assert estimate_module._fit([(10, 1e6, 1.0), (40, 2e6, 1.0)]) == (0.0, 1.0 / 2e6)
