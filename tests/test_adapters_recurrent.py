"""RWKV, RecurrentGemma, LFM2, LFM3, MiniMax and xLSTM adapters against the models.

For every family, a tiny random float64 model (seeded, offline): each recurrent
mixer's operator applied to the mixer's own input equals the mixer's own output
(relative error <= 1e-6), read by hooks and spies of the test's own, in a separate
forward pass; the structured spectra equal the SVD of every split block of the
dense operator; attention layers equal the model's own attention maps (with their
window); and every row of the ESS table has tolerance-ESS <= min(bound, TSS).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys
from pathlib import Path

import pytest
import torch
import transformers as tf

import ess_widgets.adapters as adapters
from ess_widgets import spectra

sys.path.insert(0, str(Path(__file__).parent))  # the shared tiny models (tiny_models.py)
from tiny_models import F64, V
from tiny_models import RECURRENT_CONFIGS as CONFIGS
from tiny_models import recurrent_model as tiny_model

L = 20

# Per block: its mixer's name (the table's `mixer` column) and operator family (`kind`).
MIXERS = {
    "rwkv": ["wkv", "wkv"],
    "recurrent_gemma": ["rg_lru", "rg_lru", "attention"],
    "lfm2": ["conv", "attention", "conv"],
    "lfm3": ["conv", "attention", "conv", "attention"],
    "minimax": ["linear_attention", "attention", "linear_attention"],
    "xlstm": ["mlstm", "mlstm"],
}
KIND = {
    "wkv": "wkv4",
    "rg_lru": "rg_lru",
    "conv": "gated_short_convolution",
    "linear_attention": "weighted_linear_attention",
    "mlstm": "mlstm",
    "attention": "softmax_attention",
}
WINDOWS = {("recurrent_gemma", 2): 6, ("lfm3", 1): 5, ("minimax", 1): 7}
TSS = {"wkv": 1, "rg_lru": 1, "conv": None, "linear_attention": 8, "mlstm": 4}
RECURRENT = [(f, i) for f, names in MIXERS.items() for i, m in enumerate(names) if m != "attention"]
ATTENTION = [(f, i) for f, names in MIXERS.items() for i, m in enumerate(names) if m == "attention"]


_MODELS = {}


def model_of(family: str):
    if family not in _MODELS:
        _MODELS[family] = tiny_model(family)
    return _MODELS[family]


def token_ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (L,), generator=torch.Generator().manual_seed(seed))


def relative_error(actual, expected) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def block(model, family: str, layer: int):
    """The decoder block ``layer`` of a model."""
    if family == "rwkv":
        return model.rwkv.blocks[layer]
    if family == "xlstm":
        return model.backbone.blocks[layer]
    return model.model.layers[layer]


def own_mixer(model, family: str, layer: int, ids, monkeypatch):
    """The mixer's input ``u`` and output ``y``, seen by the test's own hooks.

    Per-channel mixers give ``(L, D)`` each; per-head mixers ``(H, L, d_v)``.
    """
    seen, handles = {}, []
    blk = block(model, family, layer)
    if family == "rwkv":
        mixer = blk.attention
        module = sys.modules[type(mixer).__module__]
        original = module.rwkv_linear_attention
        current = [None]

        def spy(time_decay, time_first, key, value, **kw):
            out = original(time_decay, time_first, key, value, **kw)
            if current[0] is mixer:
                seen["u"], seen["y"] = value[0], out[0][0]
            return out

        monkeypatch.setattr(module, "rwkv_linear_attention", spy)
        handles.append(mixer.register_forward_pre_hook(lambda m, a: current.__setitem__(0, m)))
        handles.append(mixer.register_forward_hook(lambda m, a, o: current.__setitem__(0, None)))
    elif family == "recurrent_gemma":

        def rg_hook(module, args, output):
            seen["u"], seen["y"] = args[0][0], output[0]

        handles.append(blk.temporal_block.rg_lru.register_forward_hook(rg_hook))
    elif family in ("lfm2", "lfm3"):
        conv = blk.conv
        D = conv.conv.weight.shape[0]
        handles.append(
            conv.in_proj.register_forward_hook(
                lambda m, a, o: seen.__setitem__("u", o[0, :, 2 * D :])
            )
        )
        handles.append(
            conv.out_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("y", a[0][0]))
        )
    elif family == "minimax":
        attn = blk.self_attn
        H, d = attn.num_attention_heads, attn.head_dim

        def qkv_hook(module, args, output):
            qkv = attn.act_fn(output[0]).reshape(L, H, 3 * d)
            seen["u"] = qkv[..., 2 * d :].transpose(0, 1)

        handles.append(attn.qkv_proj.register_forward_hook(qkv_hook))
        handles.append(
            attn.norm.register_forward_pre_hook(
                lambda m, a: seen.__setitem__("y", a[0][0].reshape(L, H, d).transpose(0, 1))
            )
        )
    elif family == "xlstm":

        def backend_hook(module, args, kwargs, output):
            seen["u"], seen["y"] = kwargs["value"][0], output[0][0]

        handles.append(
            blk.mlstm_layer.mlstm_backend.register_forward_hook(backend_hook, with_kwargs=True)
        )
    try:
        with torch.no_grad():
            model(ids[None], use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return seen["u"].to(F64), seen["y"].to(F64)


def apply(T, u, channel_label: str):
    """``T u`` per channel (``(C, L, L)`` on ``(L, C)``) or per head (on ``(H, L, d_v)``)."""
    if channel_label == "channel":
        return (T @ u.mT[..., None]).squeeze(-1).mT
    return T @ u


@pytest.mark.parametrize("family", sorted(MIXERS))
def test_blocks_and_mixers_follow_the_config(family):
    handle = adapters.load(model_of(family))
    assert handle.layer_kinds == MIXERS[family]  # one mixer per block
    assert handle.num_layers == len(MIXERS[family]) and handle.mlp_only_layers == []
    for layer, name in enumerate(MIXERS[family]):
        assert handle.mixers(layer) == [name]
    group = "recurrent" if family in ("rwkv", "xlstm") else "hybrid"
    assert handle.family in adapters.supported_families()[group]


@pytest.mark.parametrize(("family", "layer"), RECURRENT)
def test_operator_times_input_is_the_mixers_own_output(family, layer, monkeypatch):
    model = model_of(family)
    ids = token_ids()
    u, y = own_mixer(model, family, layer, ids, monkeypatch)
    monkeypatch.undo()
    ops = adapters.load(model).operators(ids, layer)
    assert ops.mixer == MIXERS[family][layer] and ops.kind == KIND[ops.mixer]
    T = ops.dense()
    assert T.dtype == F64 and T.shape == (ops.num_channels, L, L)
    assert float(torch.triu(T, 1).abs().max()) == 0.0  # causal
    assert relative_error(apply(T, u, ops.channel_label), y) <= 1e-6
    # Not a trivial match: the past carries real weight (the diagonal alone is far off).
    diagonal = torch.diag_embed(T.diagonal(dim1=-2, dim2=-1))
    assert relative_error(apply(diagonal, u, ops.channel_label), y) > 1e-2


@pytest.mark.parametrize(("family", "layer"), RECURRENT)
def test_recurrence_spectra_equal_the_dense_spectra(family, layer):
    ops = adapters.load(model_of(family)).operators(token_ids(), layer)
    assert ops.operator.recurrence is not None
    s = ops.spectra()  # recurrence_spectra: no L x L matrix
    dense = spectra(ops.dense())
    K = s.shape[-1]
    scale = float(dense[..., :1].amax())
    torch.testing.assert_close(s, dense[..., :K], rtol=1e-7, atol=1e-10 * scale)
    tss = int(ops.tss.max())
    assert float(dense[..., tss:].abs().max()) <= 1e-10 * scale  # rank <= TSS


@pytest.mark.parametrize(("family", "layer"), ATTENTION)
def test_attention_layers_are_the_models_own_maps_with_their_window(family, layer):
    model = model_of(family)
    ids = token_ids()
    seen = {}
    blk = block(model, family, layer)
    attn = blk.temporal_block if family == "recurrent_gemma" else blk.self_attn

    def keep(module, args, output):  # returns None: the output stays untouched
        seen["maps"] = output[1][0]

    handle_ = attn.register_forward_hook(keep)
    with torch.no_grad():
        model(ids[None], use_cache=False, output_attentions=True)
    handle_.remove()
    ops = adapters.load(model).operators(ids, layer)
    assert ops.mixer == "attention" and ops.kind == "softmax_attention"
    torch.testing.assert_close(ops.dense(), seen["maps"], rtol=0, atol=1e-12)
    split = torch.arange(1, L)
    w = WINDOWS.get((family, layer))
    expected_tss = split if w is None else split.clamp(max=w)
    assert torch.equal(ops.tss[0], expected_tss)
    if w is not None:
        lag = split[:, None] - torch.arange(L)[None, :]
        assert float(ops.dense()[:, 1:][:, lag >= w].abs().max()) == 0.0


def test_minimax_lightning_state_is_never_read_as_attention():
    model = model_of("minimax")
    with torch.no_grad():
        out = model(token_ids()[None], use_cache=False, output_attentions=True)
    # transformers records the lightning layers' KV states among the "attentions" ...
    shapes = [tuple(a.shape) for a in out.attentions]
    assert (1, 2, 8, 8) in shapes and (1, 2, L, L) in shapes
    # ... the handle reads them as lightning attention, with their own operator.
    handle = adapters.load(model)
    ops = handle.operators(token_ids(), 0)
    assert ops.mixer == "linear_attention" and ops.kind == "weighted_linear_attention"
    assert ops.dense().shape == (2, L, L)


@pytest.mark.parametrize("family", sorted(MIXERS))
def test_ess_table_rows_respect_bound_and_tss(family):
    handle = adapters.load(model_of(family))
    table = handle.ess_table(token_ids(), tol=1e-6, relative=True, progress=False)
    names = MIXERS[family]
    assert sorted(table["layer"].unique()) == list(range(len(names)))
    for layer, name in enumerate(names):
        rows = table[table["layer"] == layer]
        assert set(rows["mixer"]) == {name} and set(rows["kind"]) == {KIND[name]}
        assert len(rows) == handle.num_channels(layer) * (L - 1)
        assert sorted(rows["channel"].unique()) == list(range(handle.num_channels(layer)))
        if name != "attention" and TSS[name] is not None:
            assert (rows["tss"] == TSS[name]).all()
    conv = table[table["mixer"] == "conv"]
    if len(conv):
        K = model_of(family).config.conv_L_cache
        assert (conv["tss"] == K - 1).all()
    limit = table[["bound", "tss"]].min(axis=1)
    assert (table["tolerance_ess"] <= limit).all()
    assert (table["entropy_ess"] <= limit + 1e-9).all()
    assert (table["tolerance_ess"] >= 1).all()  # every operator carries something across


@pytest.mark.parametrize(
    ("family", "target"),
    [
        ("recurrent_gemma", lambda blk: blk.temporal_block.rg_lru),
        ("lfm2", lambda blk: blk.conv.out_proj),
        ("minimax", lambda blk: blk.self_attn.norm),
        ("xlstm", lambda blk: blk.mlstm_layer.mlstm_backend),
    ],
)
def test_a_mixer_computing_differently_is_refused(family, target):
    # If the model's mixer computed something else than the adapter recomputes, the
    # adapter raises instead of measuring it: here its output is nudged by 1%.
    model = tiny_model(family)
    module = target(block(model, family, 0))
    if isinstance(module, torch.nn.Linear) or family == "minimax":
        hook = module.register_forward_pre_hook(lambda m, a: (a[0] * 1.01,))
    else:

        def nudge(m, a, o):
            return (o[0] * 1.01, *o[1:]) if isinstance(o, tuple) else o * 1.01

        hook = module.register_forward_hook(nudge)
    try:
        with pytest.raises(RuntimeError, match="differs from the module's own output"):
            adapters.load(model).operators(token_ids(), 0)
    finally:
        hook.remove()


def test_float32_models_are_read_within_their_precision():
    for family in ("rwkv", "recurrent_gemma", "lfm2", "minimax", "xlstm"):
        handle = adapters.load(tiny_model(family, dtype=torch.float32))
        ops = handle.operators(token_ids(), 0)
        assert ops.dense().dtype == F64  # built in float64 from float32 captures


def test_xlstm_through_the_external_package_is_refused(monkeypatch):
    # With the `xlstm` package installed transformers runs other kernels: say so.
    model = model_of("xlstm")
    module = sys.modules[type(model).__module__]
    monkeypatch.setattr(module, "external_xlstm", True)
    with pytest.raises(RuntimeError, match="external `xlstm` package"):
        adapters.load(model).operators(token_ids(), 0)


def test_lfm_convolution_bias_is_an_offset_outside_the_operator(monkeypatch):
    # With conv_bias=True the mixer is affine: y = T x + C * bias. T is its linear part.
    torch.manual_seed(0)
    config = CONFIGS["lfm2"]()
    config.conv_bias = True
    model = tf.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model = model.to(F64).eval()
    with torch.no_grad():
        model.model.layers[0].conv.conv.bias.normal_()
    ids = token_ids()
    u, y = own_mixer(model, "lfm2", 0, ids, monkeypatch)
    ops = adapters.load(model).operators(ids, 0)
    offset = ops.record["C"] * ops.record["bias"]  # (L, D)
    Tu = apply(ops.dense(), u, "channel")
    assert relative_error(Tu + offset, y) <= 1e-6
    assert relative_error(Tu, y) > 1e-2  # the offset is really there
