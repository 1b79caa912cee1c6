"""The shipped MQAR models through ``ess_widgets.load``: operators, ESS table, text format,
errors, and the explorer on an MQAR sequence."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ess_widgets
from ess_widgets.adapters import LayerOperators, MQARHandle, format_mqar, parse_mqar
from ess_widgets.core import entropy_ess, tolerance_ess
from ess_widgets.models import load_mqar_model, mqar_model_names
from ess_widgets.models.experiment import layer_ess
from ess_widgets.tasks import mqar

NAME = "mqar-gla-dk8-kv8"


def first_of(family: str) -> str:
    return next(n for n in mqar_model_names() if n.split("-")[1] == family)


FAMILIES = ["la", "wla", "gla", "sa", "s6"]
KINDS = {
    "la": "linear_attention",
    "wla": "weighted_linear_attention",
    "gla": "gated_linear_attention",
    "sa": "softmax_attention",
    "s6": "selective_ssm",
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def handle():
    return ess_widgets.load(NAME)


def sequence(handle, seed=7):
    return handle.example(seed=seed).inputs[0]


def test_load_by_name_offline_and_listed(handle):
    names = ess_widgets.builtin_models()
    assert names[0] == "smollm2-135m"
    mqar_names = mqar_model_names()
    assert names[1 : 1 + len(mqar_names)] == mqar_names and NAME in names
    assert isinstance(handle, MQARHandle) and handle.name == NAME
    model, record = load_mqar_model(NAME, with_record=True)
    assert handle.num_layers == model.cfg.num_layers == 2
    assert handle.layer_kinds == ["linear_attention"] * 2
    assert handle.num_channels(0) == 1 and handle.num_channels(-1) == 1
    assert handle.record == record
    # the default example is the model's training task, on a fresh seed
    ex = handle.example()
    assert ex.inputs.shape == (1, record["seq_len"]) and ex.num_pairs == record["num_pairs"]
    assert handle.default_text == format_mqar(ex.inputs[0], record["vocab_size"])
    # a model object loads too
    assert isinstance(ess_widgets.load(model), MQARHandle)


def test_unknown_name_lists_all_names():
    with pytest.raises(ValueError) as err:
        ess_widgets.load("mqar-gla-dk9-kv8")
    text = str(err.value)
    assert "smollm2-135m" in text and all(n in text for n in mqar_model_names())
    assert "Did you mean 'mqar-gla-dk8-kv8'" in text


def hidden_operators(model, ids):
    """Per block, ``(mixer input, mixer output, dense operator)`` from the hidden states,
    computed block by block here (not through the handle nor ``layer_operators``)."""
    out = []
    with torch.no_grad():
        x = model.embed(ids[None])
        for block in model.blocks:
            h = block.norm1(x)
            out.append((h, block.mixer(h), block.mixer.operator(h).dense()[0]))
            x = block(x)
        assert torch.equal(model.head(model.norm(x)), model(ids[None]))  # the same pass
    return out


def mixer_output(mixer, x, T):
    """The mixer's output with ``T`` ``(C, L, L)`` as its operator, on mixer input ``x``."""
    if hasattr(mixer, "v_proj"):  # LA, WLA, GLA, SA: T maps the values (one head)
        v = mixer.v_proj(mixer.conv(x))[0]  # (L, d_model)
        return mixer.out_proj(T[0] @ v)[None]
    u, z = mixer.in_proj(x).chunk(2, dim=-1)  # S6: T maps each channel of u
    u = F.silu(mixer.conv(u))[0]  # (L, d_inner)
    y = (T @ u.mT[..., None])[..., 0].mT + u * mixer.D
    return mixer.out_proj(y * F.silu(z[0]))[None]


@pytest.mark.parametrize("family", FAMILIES)
def test_operators_reproduce_the_models_hidden_states(family):
    h = ess_widgets.load(first_of(family))
    ids = sequence(h)
    captured = h.layer_operators(ids)
    assert list(captured) == [(i, h.mixers(i)[0]) for i in range(h.num_layers)]
    for layer, (x, y, _) in enumerate(hidden_operators(h.model, ids)):
        ops = captured[(layer, h.mixers(layer)[0])]
        with torch.no_grad():
            mine = mixer_output(h.model.blocks[layer].mixer, x, ops.dense().float())
        torch.testing.assert_close(mine, y, rtol=1e-5, atol=1e-5 * float(y.abs().max()))
        # and not the operator of another block (e.g. one fed by the embeddings)
        for other, (x_other, _, _) in enumerate(hidden_operators(h.model, ids)):
            if other != layer:
                with torch.no_grad():
                    wrong = mixer_output(h.model.blocks[layer].mixer, x_other, ops.dense().float())
                assert not torch.allclose(wrong, y, rtol=1e-3, atol=1e-3 * float(y.abs().max()))


@pytest.mark.parametrize("family", FAMILIES)
def test_operators_are_the_models_own(family):
    h = ess_widgets.load(first_of(family))
    ids = sequence(h)
    for layer in range(h.num_layers):
        ops = h.operators(ids, layer)
        ref = h.model.layer_operators(ids[None])[layer]
        assert isinstance(ops, LayerOperators)
        assert ops.kind == KINDS[family]
        assert ops.mixer == h.layer_kinds[layer] == h.mixers(layer)[0]
        assert ops.channel_label == ("channel" if family == "s6" else "head")
        C = h.num_channels(layer)
        assert ops.num_channels == C
        torch.testing.assert_close(ops.dense(), ref.dense()[0], rtol=0, atol=0)
        torch.testing.assert_close(ops.spectra(), ref.spectra()[0])
        assert ops.spectra().shape[:2] == (C, len(ids) - 1)
        assert torch.equal(ops.tss, ref.tss.expand(C, len(ids) - 1))
        assert ops.tokens == h.encode(ids).tokens
    if family == "s6":  # a channel subset is the same slice of the model's operator
        torch.testing.assert_close(ops.dense(channels=[3, 5]), ref.dense()[0, [3, 5]])
        torch.testing.assert_close(ops.spectra(channels=2), ops.spectra()[[2]])
    if family == "sa":  # TSS of softmax attention: the cache size i at split i
        assert ops.tss[0].tolist() == list(range(1, len(ids)))
    else:
        assert bool((ops.tss == h.model.cfg.state).all())


@pytest.mark.parametrize("family", ["gla", "sa", "s6"])
def test_ess_table_respects_bound_and_tss(family):
    h = ess_widgets.load(first_of(family))
    ids = sequence(h, seed=3)
    table = h.ess_table(ids, tol=1e-2, relative=True, progress=False)
    C, L = h.num_channels(0), len(ids)
    assert len(table) == h.num_layers * C * (L - 1)
    assert (table["tolerance_ess"] <= table["bound"]).all()
    assert (table["tolerance_ess"] <= table["tss"]).all()
    assert (table["entropy_ess"] <= np.minimum(table["bound"], table["tss"]) + 1e-9).all()
    assert set(table["kind"]) == {KINDS[family]}
    assert table.attrs["model"] == h.name and table.attrs["tokens"] == list(h.encode(ids).tokens)
    # independent of the table's own functions: numpy's SVD of every block of the
    # operator the model's own forward pass applies (hidden_operators)
    for layer, (_, _, T) in enumerate(hidden_operators(h.model, ids)):
        rows = table[table["layer"] == layer]
        T = T.double().numpy()  # (C, L, L)
        tol_ess, ent_ess, ties = [], [], []
        for c in range(C):
            for i in range(1, L):
                sv = np.linalg.svd(T[c, i:, :i], compute_uv=False)
                threshold = 1e-2 * sv[0]
                tol_ess.append(int((sv > threshold).sum()))
                ties.append(bool((np.abs(sv - threshold) < 1e-5 * sv[0]).any()))
                p = sv[sv > 0] / sv.sum()
                ent_ess.append(float(np.exp(-(p * np.log(p)).sum())))
        clear = ~np.array(ties)
        assert clear.mean() > 0.9
        np.testing.assert_array_equal(
            rows["tolerance_ess"].to_numpy()[clear], np.array(tol_ess)[clear]
        )
        np.testing.assert_allclose(rows["entropy_ess"].to_numpy(), ent_ess, rtol=1e-4)
        np.testing.assert_array_equal(rows["tss"].to_numpy(), h.operators(ids, layer).tss.ravel())
    # the shipped experiment's averages (relative tol 1e-2) from the same operators
    ref = layer_ess(h.model, ids[None])
    for layer, lay in enumerate(ref):
        rows = table[table["layer"] == layer]
        np.testing.assert_allclose(
            rows.groupby("split")["tolerance_ess"].mean().to_numpy(), lay["tolerance"]
        )
        np.testing.assert_allclose(
            rows.groupby("split")["entropy_ess"].mean().to_numpy(), lay["entropy"]
        )
    # a text gives the same table as its ids; one layer only
    one = h.ess_table(format_mqar(ids, h.vocab_size), layers=1, tol=1e-2, relative=True)
    np.testing.assert_array_equal(
        one["tolerance_ess"].to_numpy(), table[table["layer"] == 1]["tolerance_ess"].to_numpy()
    )


def test_text_format_round_trips(handle):
    V = handle.vocab_size
    assert parse_mqar("k3 v9 k5 v2 _ q:k5 _ k3 17", V).tolist() == [3, 40, 5, 33, 0, 5, 0, 3, 17]
    assert format_mqar([3, 40, 5, 33, 0, 5, 0, 3], V) == "k3 v9 k5 v2 _ q:k5 _ q:k3"
    batch = mqar(4, num_pairs=8, seq_len=64, vocab_size=V, seed=11)
    for ids in batch.inputs:
        text = format_mqar(ids, V)
        assert torch.equal(parse_mqar(text, V), ids)
        enc = handle.encode(text)
        assert torch.equal(enc.ids, ids) and " ".join(enc.tokens) == text
    # queries are labelled where the task puts them
    labels = [[t.startswith("q:") for t in handle.encode(ids).tokens] for ids in batch.inputs]
    assert labels == batch.query_mask.tolist()
    assert handle.encode("1, 2,3").ids.tolist() == [1, 2, 3]  # commas work as spaces
    assert handle.format([3, 40]) == "k3 v9"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("k3 x7 v2", "Unknown MQAR token 'x7' at position 1"),
        ("k3 hello", "Unknown MQAR token"),
        ("k32 v1", "'k32' at position 0 is not a key of this model: keys are k1 .. k31"),
        ("k1 v33", "values are v1 .. v32"),
        ("k1 v0", "values are v1 .. v32"),
        ("k1 64", "outside the vocabulary of 64"),
        ("k1", "at least 2"),
        ([], "no tokens"),
        ([5], "at least 2"),
        ([1, 64], "outside the vocabulary"),
        ([1, -1], ">= 0"),
        (torch.zeros(2, 5, dtype=torch.long), "one sequence at a time"),
    ],
)
def test_bad_input_says_what_is_wrong(handle, bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        handle.operators(bad, 0)


def test_bad_layer_and_budget(handle):
    ids = sequence(handle)
    with pytest.raises(IndexError, match="2 layers"):
        handle.operators(ids, 2)
    with pytest.raises(ValueError, match="Shorten the input"):
        handle.operators(ids, 0, memory_budget=10_000)
    with pytest.raises(TypeError, match="integers"):
        handle.operators(torch.zeros(5), 0)


def test_explorer_opens_an_mqar_model(handle):
    pytest.importorskip("ipywidgets")
    from ess_widgets.app import Explorer
    from ess_widgets.app.explorer import DEFAULT_TEXT

    ex = Explorer(model=handle, layer=1, tol=1e-2).wait(300)
    assert ex.error == "", ex.error
    assert ex.text == handle.default_text and ex._text_area.value == ex.text
    d = ex.layer_data()
    ops = handle.operators(ex.text, 1)
    np.testing.assert_allclose(d.spectra, ops.spectra().numpy(), rtol=1e-12, atol=1e-12)
    assert d.tokens == ops.tokens and d.family == "gated_linear_attention"
    assert d.tokens[0].startswith("k") and any(t.startswith("q:k") for t in d.tokens)
    np.testing.assert_array_equal(d.tss, ops.tss.numpy())
    cur = ex.current()
    S = torch.from_numpy(d.spectra)
    np.testing.assert_array_equal(cur["tolerance_ess"], tolerance_ess(S, 1e-2).numpy())
    np.testing.assert_allclose(cur["curve_entropy"], entropy_ess(S)[0].numpy())
    assert ex.token_view.tokens == list(d.tokens)
    # changing the tolerance re-thresholds the same spectra
    ex.tol = 1e-4
    assert ex.error == ""
    np.testing.assert_array_equal(ex.current()["tolerance_ess"], tolerance_ess(S, 1e-4).numpy())
    assert ex.token_view.values[:-1] == [*map(float, tolerance_ess(S, 1e-4)[0])]
    ex.relative = True
    np.testing.assert_array_equal(
        ex.current()["curve_tolerance"], tolerance_ess(S, 1e-4, relative=True)[0].numpy()
    )
    # a typed sequence, then a bad one: the error shows, and the explorer recovers
    ex.text = "k1 v1 k2 v2 _ q:k1 _ q:k2"
    assert ex.wait(300).error == "" and ex.layer_data().tokens[-1] == "q:k2"
    ex.text = "k1 zz"
    assert "Unknown MQAR token 'zz'" in ex.wait(300).error
    ex.text = "k1 v1 k2 v2 _ q:k2"
    assert ex.wait(300).error == ""
    # another MQAR model (S6: channels); the typed text stays
    ex.model = first_of("s6")
    assert ex.wait(300).error == "" and ex.text == "k1 v1 k2 v2 _ q:k2"
    assert ex.layer_data().num_channels == ex.handle.num_channels(0) > 1
    # back to a model without its own format: the model's example gives way to the default
    ex.text = ex.handle.default_text
    ex.wait(300)
    assert ex._model_text_for(object(), ex.text) == DEFAULT_TEXT
    ex.close()
