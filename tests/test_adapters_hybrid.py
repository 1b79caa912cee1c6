"""Hybrid models (Jamba, Bamba, GraniteMoeHybrid): every layer checked against the model.

Attention layers against the model's own attention weights; Mamba and Mamba2 layers:
``dense() @ u`` against the layer's own scan run without the skip ``D`` and the gate.
Tiny random models from configs (seeded, offline), 3 layers: SSM, attention, SSM.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys

import pytest
import torch
import transformers as tf

import ess_widgets.adapters as adapters
from ess_widgets import spectra

V = 64
COMMON = {
    "num_hidden_layers": 3,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": V,
    "max_position_embeddings": 64,
}
MAMBA2 = {
    "mamba_n_heads": 4,
    "mamba_d_head": 16,
    "mamba_n_groups": 2,
    "mamba_d_state": 6,
    "mamba_chunk_size": 8,
    "mamba_expand": 2,
}
CONFIGS = {
    "jamba": lambda: tf.JambaConfig(
        **COMMON,
        attn_layer_period=3,
        attn_layer_offset=1,
        expert_layer_period=2,
        expert_layer_offset=1,
        num_experts=2,
        num_experts_per_tok=1,
        mamba_d_state=6,
        mamba_expand=2,
        mamba_dt_rank=4,
    ),
    "bamba": lambda: tf.BambaConfig(**COMMON, **MAMBA2, attn_layer_indices=[1]),
    "granitemoehybrid": lambda: tf.GraniteMoeHybridConfig(
        **COMMON,
        **MAMBA2,
        layer_types=["mamba", "attention", "mamba"],
        num_local_experts=2,
        num_experts_per_tok=1,
    ),
}
SSM_KIND = {"jamba": "selective_ssm", "bamba": "ssd", "granitemoehybrid": "ssd"}


def tiny_model(family: str):
    torch.manual_seed(0)
    cfg = CONFIGS[family]()
    return tf.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()


def relative_error(actual, expected) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def hybrid(request):
    family = request.param
    return family, tiny_model(family)


def test_layer_kinds_follow_the_config(hybrid):
    _, model = hybrid
    handle = adapters.load(model)
    assert handle.layer_kinds == ["ssm", "attention", "ssm"]
    assert handle.mixers(1) == ["attention"] and handle.mlp_only_layers == []
    assert handle.family in adapters.supported_families()["hybrid"]


def test_attention_layer_equals_the_models_weights(hybrid):
    _, model = hybrid
    ids = torch.randint(0, V, (20,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(ids[None], output_attentions=True, use_cache=False)
    assert len(out.attentions) == 1  # only the attention layer records maps
    ops = adapters.load(model).operators(ids, 1)
    assert ops.mixer == "attention" and ops.kind == "softmax_attention"
    torch.testing.assert_close(ops.dense(), out.attentions[0][0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("layer", [0, 2])
def test_ssm_layers_equal_their_own_scan(hybrid, layer, monkeypatch):
    family, model = hybrid
    handle = adapters.load(model)
    mixer = handle.mixer_layer(layer).module
    module = sys.modules[type(mixer).__module__]
    kind = SSM_KIND[family]
    name = "mamba_selective_scan" if kind == "selective_ssm" else "mamba2_chunk_scan"
    original = getattr(module, name)
    current, seen = [None], {}

    def spy(*args, **kw):
        out = original(*args, **kw)
        if current[0] is mixer and "plain" not in seen:
            plain = {k: v for k, v in kw.items() if k not in ("D", "z")}
            seen["plain"] = original(*args, **plain)[0].double()
            seen["u"] = args[0][0].double()
        return out

    mixer.register_forward_pre_hook(lambda m, a: current.__setitem__(0, m))
    monkeypatch.setattr(module, name, spy)
    ids = torch.randint(0, V, (20,), generator=torch.Generator().manual_seed(1))
    ops = handle.operators(ids, layer)
    assert ops.kind == kind
    T = ops.dense()
    if kind == "selective_ssm":  # u (D, L), output (D, L): one operator per channel
        y = (T @ seen["u"][:, :, None]).squeeze(-1)
    else:  # u (L, H, P), output (L, H, P): one operator per head
        y = torch.einsum("hij,jhp->ihp", T, seen["u"])
    assert relative_error(y, seen["plain"]) < 1e-5
    s = ops.spectra()
    dense = spectra(T)
    K = s.shape[-1]
    torch.testing.assert_close(s, dense[..., :K], rtol=1e-7, atol=1e-9 * float(dense.max()))


def test_hybrid_ess_table_has_both_kinds(hybrid):
    family, model = hybrid
    table = adapters.load(model).ess_table(list(range(1, 17)), tol=1e-6, progress=False)
    kinds = table.groupby("layer", observed=True)["kind"].first().tolist()
    assert kinds == [SSM_KIND[family], "softmax_attention", SSM_KIND[family]]
    mixers = table.groupby("layer", observed=True)["mixer"].first().tolist()
    assert mixers == ["ssm", "attention", "ssm"]
    assert (table["tolerance_ess"] <= table[["bound", "tss"]].min(axis=1)).all()
    assert set(table.attrs["channel_label"]) == {SSM_KIND[family], "softmax_attention"}
