"""Mamba, FalconMamba and Mamba2 adapters against the layers' own intermediate outputs.

For each channel (Mamba) or head (Mamba2), ``dense() @ u`` must equal what the layer's
own scan computes from ``u`` before gating and channel-mixing norms, to 1e-5 relative.
The reference is captured from the model itself: a spy replaces the module-level scan
function and calls the original once more without the skip ``D`` and gate ``z``
(Mamba), or a pre-hook reads the input of ``mixer.norm`` (Mamba2).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys

import pytest
import torch
import torch.nn.functional as F
import transformers as tf

import ess_widgets.adapters as adapters
from ess_widgets import spectra

V = 64

CONFIGS = {
    "mamba": lambda: tf.MambaConfig(
        num_hidden_layers=2, hidden_size=16, intermediate_size=24, state_size=6, vocab_size=V
    ),
    "falcon_mamba": lambda: tf.FalconMambaConfig(
        num_hidden_layers=2, hidden_size=16, intermediate_size=24, state_size=6, vocab_size=V
    ),
    "mamba2": lambda: tf.Mamba2Config(
        num_hidden_layers=2,
        hidden_size=16,
        expand=2,
        num_heads=4,
        head_dim=8,
        n_groups=2,  # two heads per B/C group
        state_size=6,
        chunk_size=8,  # L = 20 spans three chunks
        vocab_size=V,
    ),
}


def tiny_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(CONFIGS[family]()).eval()
    # Not the default init: a nontrivial skip, spread-out steps, and B, C of order 1 so
    # that T u is as large as the skip D u (with the default init it is about 1% of it).
    with torch.no_grad():
        for layer in model.backbone.layers:
            mixer = layer.mixer
            mixer.D.normal_()
            bias = mixer.dt_bias if family == "mamba2" else mixer.dt_proj.bias
            bias.uniform_(-3.0, 0.5)
            (mixer.in_proj if family == "mamba2" else mixer.x_proj).weight.normal_(std=0.5)
    return model


def token_ids(L: int = 20, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (L,), generator=torch.Generator().manual_seed(seed))


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("family", ["mamba", "falcon_mamba"])
@pytest.mark.parametrize("layer", [0, 1])
def test_mamba_dense_times_u_is_the_scan_output(family, layer, monkeypatch):
    model = tiny_model(family)
    mixer = model.backbone.layers[layer].mixer
    module = sys.modules[type(mixer).__module__]
    original = module.mamba_selective_scan
    seen = {}

    def spy(u, dt, A, B, C, **kw):
        out = original(u, dt, A, B, C, **kw)
        if "ungated" not in seen and current[0] is mixer:
            plain = {k: v for k, v in kw.items() if k not in ("D", "z")}
            seen["ungated"] = original(u, dt, A, B, C, **plain)[0].double()  # (D, L)
            seen["u"], seen["D"], seen["z"] = u[0].double(), kw["D"].double(), kw["z"][0]
            seen["output"] = out[0].double()
        return out

    current = [None]
    mixer.register_forward_pre_hook(lambda m, a: current.__setitem__(0, m))
    monkeypatch.setattr(module, "mamba_selective_scan", spy)

    handle = adapters.load(model)
    assert handle.layer_kinds == ["ssm", "ssm"]
    ops = handle.operators(token_ids(), layer)
    d_inner = model.config.intermediate_size
    assert ops.mixer == "ssm" and ops.kind == "selective_ssm"
    assert ops.channel_label == "channel" and ops.num_channels == d_inner
    T = ops.dense()
    assert T.shape == (d_inner, 20, 20) and T.dtype == torch.float64
    u = seen["u"]
    torch.testing.assert_close(ops.record["u"].double(), u)
    y = (T @ u[:, :, None]).squeeze(-1)  # per channel: T[c] @ u[c]
    for c in range(d_inner):
        assert relative_error(y[c], seen["ungated"][c]) < 1e-5, c
    # The whole scan: skip and gate added back give the layer's gated output.
    gated = (y + seen["D"][:, None] * u) * F.silu(seen["z"].double())
    assert relative_error(gated, seen["output"]) < 1e-5
    skip_only = seen["D"][:, None] * u * F.silu(seen["z"].double())
    assert relative_error(skip_only, seen["output"]) > 0.1  # T u is not negligible


@pytest.mark.parametrize("layer", [0, 1])
def test_mamba2_dense_times_u_is_the_norm_input(layer, monkeypatch):
    model = tiny_model("mamba2")
    mixer = model.backbone.layers[layer].mixer
    module = sys.modules[type(mixer).__module__]
    original = module.mamba2_chunk_scan
    captured = {}
    mixer.norm.register_forward_pre_hook(
        lambda m, args: captured.setdefault("norm_input", args[0][0].double())
    )

    def spy(u, dt, A, B, C, chunk_size, **kw):
        out = original(u, dt, A, B, C, chunk_size, **kw)
        if current[0] is mixer and "no_skip" not in captured:
            plain = {k: v for k, v in kw.items() if k != "D"}
            captured["no_skip"] = original(u, dt, A, B, C, chunk_size, **plain)[0].double()
        return out

    current = [None]
    mixer.register_forward_pre_hook(lambda m, a: current.__setitem__(0, m))
    monkeypatch.setattr(module, "mamba2_chunk_scan", spy)
    handle = adapters.load(model)
    ops = handle.operators(token_ids(), layer)
    H, P = model.config.num_heads, model.config.head_dim
    assert ops.mixer == "ssm" and ops.kind == "ssd"
    assert ops.channel_label == "head" and ops.num_channels == H
    T = ops.dense()  # (H, L, L)
    assert T.shape == (H, 20, 20)
    u = ops.record["u"].double()  # (L, H, P): the scan input of each head's channels
    D = ops.record["D"].double()
    y = torch.einsum("hij,jhp->ihp", T, u)  # (L, H, P): every channel of head h uses T[h]
    for h in range(H):
        for p in range(P):
            assert relative_error(y[:, h, p], captured["no_skip"][:, h, p]) < 1e-5, (h, p)
    # With the skip (the diagonal D u) it is the input of mixer.norm, the gated RMSNorm.
    with_skip = y + D[None, :, None] * u
    expected = captured["norm_input"].reshape(20, H, P)
    assert relative_error(with_skip, expected) < 1e-5
    assert relative_error(D[None, :, None] * u, expected) > 0.1  # T u is not negligible


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_structured_spectra_equal_the_dense_path(family):
    ops = adapters.load(tiny_model(family)).operators(token_ids(), 1)
    N = 6
    s = ops.spectra()  # through recurrence_spectra
    assert s.shape == (ops.num_channels, 19, N)
    dense = spectra(ops.dense())  # singular values of every split block, by SVD
    scale = dense[..., :1].amax()
    torch.testing.assert_close(s, dense[..., :N], rtol=1e-7, atol=1e-9 * float(scale))
    assert float(dense[..., N:].abs().max()) <= 1e-9 * float(scale)  # rank <= d_state
    assert torch.equal(ops.tss, torch.full((ops.num_channels, 19), N))


def test_channel_selection_matches_the_full_operators():
    ops = adapters.load(tiny_model("mamba")).operators(token_ids(12), 0)
    full = ops.dense()
    torch.testing.assert_close(ops.dense(channels=[3, 7]), full[[3, 7]])
    torch.testing.assert_close(ops.spectra(channels=slice(0, 4)), ops.spectra()[:4])
    assert ops.dense(channels=-1).shape == (1, 12, 12)
    with pytest.raises(IndexError, match="out of range"):
        ops.dense(channels=24)


def test_ssm_ess_table_respects_bound_and_tss():
    handle = adapters.load(tiny_model("mamba2"))
    table = handle.ess_table(token_ids(), tol=1e-6, progress=False)
    assert len(table) == 2 * 4 * 19
    assert set(table["kind"]) == {"ssd"} and set(table["mixer"]) == {"ssm"}
    assert (table["tolerance_ess"] <= table[["bound", "tss"]].min(axis=1)).all()
    assert (table["entropy_ess"] <= table[["bound", "tss"]].min(axis=1) + 1e-9).all()
    assert (table["tss"] == 6).all()
    assert table.attrs["channel_label"] == {"ssd": "head"}
