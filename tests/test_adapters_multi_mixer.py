"""Blocks with several mixers or none: Falcon-H1, NemotronH, Zamba2, against the models.

- Falcon-H1 runs an SSD mixer and attention in parallel in every block: two mixers per
  layer, ``"ssm"`` first (the order the forward pass runs them).
- NemotronH has SSD, attention and MLP-only blocks (``hybrid_override_pattern``):
  the MLP-only blocks are listed in ``mlp_only_layers`` and absent from the table.
- Zamba2 runs SSD in every block; its hybrid blocks run a shared attention first,
  although that module is registered after the SSM.

Each SSD operator applied to the scan's own input ``u`` must equal the model's scan
output without the skip ``D`` (float64 model, relative error <= 1e-6); each attention
operator equals the model's attention probabilities; the recurrence spectra equal the
dense spectra; every row has tolerance-ESS <= min(bound, TSS). Tiny random configs
(seeded, offline, the pure-PyTorch paths).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys
from pathlib import Path

import pytest
import torch

import ess_widgets.adapters as adapters
from ess_widgets import spectra

sys.path.insert(0, str(Path(__file__).parent))  # the shared tiny models (tiny_models.py)
from tiny_models import MULTI_MIXER_CONFIGS as CONFIGS
from tiny_models import V
from tiny_models import multi_mixer_model as tiny_model

LAYER_KINDS = {
    "falcon_h1": ["ssm+attention", "ssm+attention"],
    "nemotron_h": ["ssm", "mlp", "attention", "ssm"],
    "zamba2": ["ssm", "attention+ssm", "ssm", "attention+ssm"],
}
MLP_ONLY = {"falcon_h1": [], "nemotron_h": [1], "zamba2": []}


def token_ids(L: int = 20) -> torch.Tensor:
    return torch.randint(0, V, (L,), generator=torch.Generator().manual_seed(1))


def relative_error(actual, expected) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def family_model(request):
    return request.param, tiny_model(request.param)


def test_layers_are_blocks_and_mixers_run_in_forward_order(family_model):
    family, model = family_model
    handle = adapters.load(model)
    assert handle.num_layers == model.config.num_hidden_layers
    assert handle.layer_kinds == LAYER_KINDS[family]
    assert handle.mlp_only_layers == MLP_ONLY[family]
    assert handle.family in adapters.supported_families()["hybrid"]
    # the order the forward pass runs them, seen by pre-hooks on the mixers
    ran = []
    for layer, block in enumerate(model.model.layers):
        for name in handle.mixers(layer):
            module = handle.mixer_layer(layer, name).module
            assert module in list(block.modules())
            module.register_forward_pre_hook(lambda m, a, k=(layer, name): ran.append(k))
    with torch.no_grad():
        model(token_ids(6)[None], use_cache=False)
    expected = [(i, m) for i in range(handle.num_layers) for m in handle.mixers(i)]
    assert ran == expected
    if family == "zamba2":  # the shared attention is registered after the SSM
        names = [n for n, _ in model.model.layers[1].named_modules()]
        assert names.index("mamba_decoder.mamba") < names.index("shared_transformer.self_attn")


def test_mixer_must_be_named_where_a_block_has_several(family_model):
    _, model = family_model
    handle = adapters.load(model)
    ids = token_ids(8)
    for layer in range(handle.num_layers):
        names = handle.mixers(layer)
        if len(names) > 1:
            with pytest.raises(ValueError, match=r"pass mixer= one of them"):
                handle.operators(ids, layer)
            with pytest.raises(ValueError, match=r"no mixer 'conv'.*" + names[0]):
                handle.operators(ids, layer, mixer="conv")
        elif not names:
            with pytest.raises(ValueError, match="MLP-only"):
                handle.operators(ids, layer)
            with pytest.raises(ValueError, match="MLP-only"):
                handle.num_channels(layer)


def test_attention_operators_are_the_models_maps(family_model):
    _, model = family_model
    handle = adapters.load(model)
    ids = token_ids()
    with torch.no_grad():
        maps = model(ids[None], output_attentions=True, use_cache=False).attentions
    layers = [i for i in range(handle.num_layers) if "attention" in handle.mixers(i)]
    assert len(maps) == len(layers)
    captured = handle.layer_operators(ids)
    for layer, expected in zip(layers, maps):
        ops = captured[(layer, "attention")]
        assert ops.kind == "softmax_attention" and ops.channel_label == "head"
        torch.testing.assert_close(ops.dense(), expected[0], rtol=0, atol=1e-12)


def test_ssd_operators_equal_the_models_scan(family_model, monkeypatch):
    _, model = family_model
    handle = adapters.load(model)
    layers = [i for i in range(handle.num_layers) if "ssm" in handle.mixers(i)]
    mixers = {id(handle.mixer_layer(i, "ssm").module): i for i in layers}
    module = sys.modules[type(handle.mixer_layer(layers[0], "ssm").module).__module__]
    original = module.mamba2_chunk_scan
    current, seen = [None], {}

    def spy(*args, **kw):
        out = original(*args, **kw)
        if current[0] is not None and current[0] not in seen:
            plain = {k: v for k, v in kw.items() if k != "D"}  # the scan alone, no skip
            seen[current[0]] = (args[0][0].double(), original(*args, **plain)[0].double())
        return out

    hooks = []
    for i in layers:
        mixer = handle.mixer_layer(i, "ssm").module
        hooks.append(
            mixer.register_forward_pre_hook(lambda m, a: current.__setitem__(0, mixers[id(m)]))
        )
        hooks.append(mixer.register_forward_hook(lambda m, a, o: current.__setitem__(0, None)))
    monkeypatch.setattr(module, "mamba2_chunk_scan", spy)
    ids = token_ids()
    try:
        captured = handle.layer_operators(ids)
    finally:
        for h in hooks:
            h.remove()
    assert sorted(seen) == layers
    for i in layers:
        ops = captured[(i, "ssm")]
        assert ops.kind == "ssd" and ops.mixer == "ssm"
        u, expected = seen[i]  # (L, H, P) each
        T = ops.dense()
        y = torch.einsum("hij,jhp->ihp", T, u)
        assert relative_error(y, expected) <= 1e-6
        s = ops.spectra()
        dense = spectra(T)
        K = s.shape[-1]
        torch.testing.assert_close(s, dense[..., :K], rtol=1e-7, atol=1e-9 * float(dense.max()))
        assert float(dense[..., K:].max()) <= 1e-9 * float(dense.max())  # rank <= d_state


def test_table_rows_layers_and_mixers(family_model):
    family, model = family_model
    handle = adapters.load(model)
    table = handle.ess_table(token_ids(16), tol=1e-6, relative=True, progress=False)
    assert (table["tolerance_ess"] <= table[["bound", "tss"]].min(axis=1)).all()
    pairs = set(table.groupby(["layer", "mixer"], observed=True).size().index)
    expected = {(i, m) for i in range(handle.num_layers) for m in handle.mixers(i)}
    assert pairs == expected
    assert not set(table["layer"]) & set(MLP_ONLY[family])
    for (layer, mixer), rows in table.groupby(["layer", "mixer"], observed=True):
        assert len(rows) == handle.num_channels(layer, mixer) * 15
        assert set(rows["kind"]) == {"ssd" if mixer == "ssm" else "softmax_attention"}


def test_a_mixer_that_bypasses_the_scan_fails_clearly(monkeypatch):
    # e.g. a fused CUDA kernel path that never calls the module-level scan function
    model = tiny_model("nemotron_h")
    handle = adapters.load(model)
    mixer = handle.mixer_layer(0).module
    monkeypatch.setattr(mixer, "forward", lambda hidden_states, *a, **k: hidden_states * 0)
    with pytest.raises(RuntimeError, match="recorded nothing"):
        handle.operators(token_ids(8), 0)


def test_mlp_only_layers_alone_are_refused():
    handle = adapters.load(tiny_model("nemotron_h"))
    with pytest.raises(ValueError, match=r"no sequence mixer.*\[0, 2, 3\]"):
        handle.ess_table(token_ids(8), layers=[1], progress=False)
    assert handle.estimate(8, layers=[1])["seconds"] == 0
    only_two = handle.ess_table(token_ids(8), layers=[1, 2], progress=False)
    assert set(only_two["layer"]) == {2}
