"""Delta-rule hybrids (qwen3_next, olmo_hybrid, kimi_linear, bailing_hybrid) against the
models' own mixers.

Tiny random float64 models, three blocks: delta rule, attention, delta rule. For each
delta-rule block ``dense() @ v`` (every value channel of a head through its head's
operator) must equal what the model's own delta-rule function returns on that layer:
the output the model computed (its PyTorch reference works in float32 inside, so to
1e-6 relative) and the same function re-run with float64 arithmetic (to 1e-10).
Then the structured spectra against the SVD of the dense operators, and the ESS table
(layer and kind columns, ESS within min(bound, TSS)).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import contextlib
import inspect
import sys
import types
from pathlib import Path

import pytest
import torch
import transformers as tf

import ess_widgets.adapters as adapters
from ess_widgets import spectra
from ess_widgets.adapters.delta_rule import GatedDeltaNetAdapter, KimiDeltaAttentionAdapter

sys.path.insert(0, str(Path(__file__).parent))  # the shared tiny models (tiny_models.py)
from tiny_models import DELTA_CONFIGS as CONFIGS
from tiny_models import V, delta_mixers
from tiny_models import delta_model as tiny_model

L = 20
KIND = {  # operator family (the table's kind column)
    "qwen3_next": "gated_delta_rule",
    "olmo_hybrid": "gated_delta_rule",
    "kimi_linear": "kimi_delta_attention",
    "bailing_hybrid": "kimi_delta_attention",
}
D_K = 8
RECURRENT = {
    "gated_delta_rule": "torch_recurrent_gated_delta_rule",
    "kimi_delta_attention": "recurrent_kimi_delta_attention",
}
FUNCTION = {
    "gated_delta_rule": "torch_chunk_gated_delta_rule",
    "kimi_delta_attention": "chunk_kimi_delta_attention",
}


def token_ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (L,), generator=torch.Generator().manual_seed(seed))


def relative_error(actual, expected) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


class _Float64Torch(types.ModuleType):
    """``torch`` with ``torch.float32`` read as float64 (for re-running a reference)."""

    def __getattr__(self, name):
        return torch.float64 if name == "float32" else getattr(torch, name)


def in_float64(function):
    """The model's PyTorch reference ``function`` with its float32 casts made float64."""
    inner = inspect.unwrap(function)
    rebound = types.FunctionType(
        inner.__code__,
        {**inner.__globals__, "torch": _Float64Torch("torch")},
        inner.__name__,
        inner.__defaults__,
        inner.__closure__,
    )
    rebound.__kwdefaults__ = inner.__kwdefaults__

    def run(*args, **kwargs):
        # KDA's reference also casts with Tensor.float(): make that float64 too.
        had = "float" in vars(torch.Tensor)
        saved = torch.Tensor.float
        torch.Tensor.float = torch.Tensor.double
        try:
            return rebound(*args, **kwargs)
        finally:
            if had:
                torch.Tensor.float = saved
            else:
                del torch.Tensor.float

    return run


@contextlib.contextmanager
def spy_on(model, mixer, name, replacement=None):
    """Record the (output, float64 re-run) of ``name`` as ``mixer`` calls it."""
    module = sys.modules[type(mixer).__module__]
    original = getattr(module, name)
    seen = {}
    current = [None]

    def spy(*args, **kwargs):
        out = (replacement or original)(*args, **kwargs)
        if current[0] is mixer and "output" not in seen:
            seen["output"] = out[0][0]
            seen["float64"] = in_float64(original)(*args, **kwargs)[0][0]
        return out

    hooks = [
        mixer.register_forward_pre_hook(lambda m, a: current.__setitem__(0, m)),
        mixer.register_forward_hook(lambda m, a, o: current.__setitem__(0, None)),
    ]
    setattr(module, name, spy)
    try:
        yield seen
    finally:
        setattr(module, name, original)
        for hook in hooks:
            hook.remove()


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def hybrid(request):
    family = request.param
    return family, tiny_model(family)


def test_layer_kinds_follow_the_layer_types(hybrid):
    _, model = hybrid
    handle = adapters.load(model)
    assert handle.layer_kinds == ["linear_attention", "attention", "linear_attention"]
    assert handle.mixers(0) == ["linear_attention"] and handle.mlp_only_layers == []
    assert handle.num_channels(0) == 4 and handle.num_channels(1) == 4
    assert handle.channel_label(0) == "head"
    assert handle.family in adapters.supported_families()["hybrid"]


@pytest.mark.parametrize("layer", [0, 2])
def test_dense_times_v_is_the_models_delta_rule_output(hybrid, layer):
    family, model = hybrid
    mixer = delta_mixers(model)[layer // 2]
    handle = adapters.load(model)
    kind = KIND[family]
    with spy_on(model, mixer, FUNCTION[kind]) as seen:
        ops = handle.operators(token_ids(), layer)
    assert ops.mixer == "linear_attention" and ops.kind == kind
    assert ops.channel_label == "head" and ops.num_channels == 4
    assert ops.operator.kind == kind
    T = ops.dense()
    assert T.shape == (4, L, L) and T.dtype == torch.float64
    v = ops.record["v"]  # (L, H_v, d_v): the values after the short convolution
    assert v.dtype == torch.float64
    y = torch.einsum("hij,jhp->ihp", T, v)  # every channel of head h through T[h]
    assert relative_error(y, seen["float64"]) < 1e-10
    assert relative_error(y, seen["output"]) < 1e-6
    # the operator is not trivial: it mixes positions well beyond the diagonal
    diagonal = torch.diagonal(T, dim1=-2, dim2=-1)
    assert relative_error(diagonal.mT[..., None] * v, seen["output"]) > 0.1


@pytest.mark.parametrize("family", ["qwen3_next", "kimi_linear"])
def test_capture_reads_whatever_implementation_sits_behind_the_name(family):
    # A stand-in for a flash-linear-attention kernel bound to the same name: the
    # recurrent PyTorch form. The capture reads its arguments, so the operator still
    # reproduces its output.
    model = tiny_model(family)
    mixer = delta_mixers(model)[0]
    module = sys.modules[type(mixer).__module__]
    kind = KIND[family]
    recurrent = getattr(module, RECURRENT[kind])

    def kernel(query, key, value, g, beta, chunk_size=64, initial_state=None, **kwargs):
        kwargs.pop("cu_seqlens", None)
        return recurrent(query, key, value, g=g, beta=beta, initial_state=initial_state, **kwargs)

    with spy_on(model, mixer, FUNCTION[kind], replacement=kernel) as seen:
        ops = adapters.load(model).operators(token_ids(), 0)
    y = torch.einsum("hij,jhp->ihp", ops.dense(), ops.record["v"])
    assert relative_error(y, seen["output"]) < 1e-6


def test_a_cached_call_is_refused():
    model = tiny_model("qwen3_next")
    handle = adapters.load(model)
    spec = handle.mixer_layer(0)
    ids = token_ids()[None]
    store = {}
    with GatedDeltaNetAdapter().recording([spec], store), torch.no_grad():
        out = model(input_ids=ids, use_cache=True)  # fills the cache, no initial state
        assert store[spec.key]["v"].shape == (L, 4, 6)
        with pytest.raises(RuntimeError, match="use_cache=False"):
            model(input_ids=ids[:, :1], cache=out.past_key_values, use_cache=True)


def test_structured_spectra_equal_the_dense_path(hybrid):
    _, model = hybrid
    ops = adapters.load(model).operators(token_ids(), 2)
    s = ops.spectra()  # recurrence_spectra, transitions applied as decay + rank one
    assert s.shape == (4, L - 1, D_K)
    dense = spectra(ops.dense())
    scale = float(dense[..., 0].max())
    torch.testing.assert_close(s, dense[..., :D_K], rtol=1e-7, atol=1e-10 * scale)
    assert float(dense[..., D_K:].abs().max()) <= 1e-10 * scale  # rank <= d_k
    assert torch.equal(ops.tss, torch.full((4, L - 1), D_K))


def test_ess_table_rows_and_bounds(hybrid):
    family, model = hybrid
    table = adapters.load(model).ess_table(token_ids(), tol=1e-6, relative=True, progress=False)
    assert len(table) == 3 * 4 * (L - 1)
    kinds = table.groupby("layer", observed=True)["kind"].unique()
    expected = [[KIND[family]], ["softmax_attention"], [KIND[family]]]
    assert [list(kinds[i]) for i in range(3)] == expected
    mixers = table.groupby("layer", observed=True)["mixer"].unique()
    names = [list(mixers[i]) for i in range(3)]
    assert names == [["linear_attention"], ["attention"], ["linear_attention"]]
    assert (table["tolerance_ess"] <= table[["bound", "tss"]].min(axis=1)).all()
    assert (table["entropy_ess"] <= table[["bound", "tss"]].min(axis=1) + 1e-9).all()
    delta = table[table["kind"] == KIND[family]]
    assert (delta["tss"] == D_K).all()
    assert delta["tolerance_ess"].max() == D_K  # the state is used, not collapsed
    attention = table[table["kind"] == "softmax_attention"]
    assert (attention["tss"] == attention["split"]).all()  # cached positions


def test_footprint_grows_with_d_k_squared_not_l_times_d_k_squared():
    # The spectra's working memory per head: O(L d_k^2) factors, no (L, d_k, d_k)
    # transitions for all heads at once.
    cfg = tf.Qwen3NextConfig(
        linear_num_key_heads=16,
        linear_num_value_heads=32,
        linear_key_head_dim=128,
        linear_value_head_dim=128,
        num_hidden_layers=1,
        layer_types=["linear_attention"],
    )
    with torch.device("meta"):
        mixer = tf.models.qwen3_next.modeling_qwen3_next.Qwen3NextGatedDeltaNet(cfg, 0)
    spec = adapters.architectures.MixerLayer(
        index=0, mixer="linear_attention", adapter="gated_deltanet", module=mixer
    )
    fp = GatedDeltaNetAdapter().footprint(spec, cfg, 2048)
    assert fp.peak < 2**30
    all_transitions = 32 * 2048 * 128 * 128 * 8
    assert fp.peak < all_transitions / 4
    assert KimiDeltaAttentionAdapter().kind == "kimi_delta_attention"


def test_attention_blocks_read_the_models_own_attention_maps(hybrid):
    # Gated attention (Qwen3-Next), plain (OLMo Hybrid) and MLA (Kimi Linear, Ling):
    # the maps the model returns under eager attention; TSS is the number of positions.
    _, model = hybrid
    ops = adapters.load(model).operators(token_ids(), 1)
    assert ops.mixer == "attention" and ops.kind == "softmax_attention"
    assert ops.num_channels == 4
    with torch.no_grad():
        out = model(token_ids()[None], output_attentions=True, use_cache=False)
    (maps,) = out.attentions  # one attention block
    torch.testing.assert_close(ops.dense(), maps[0])
    assert torch.equal(ops.tss, torch.arange(1, L).expand(4, L - 1))


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        pytest.param({"use_gate_in_kernel": True}, "raw gate", id="gate-in-kernel"),
        pytest.param({"scale": 0.5}, "query scale", id="scale"),
    ],
)
def test_a_call_the_operator_cannot_read_is_refused(extra, match):
    # A kernel that would read its arguments differently (fla's KDA computing the decay
    # from a raw gate, or another query scale) is refused rather than misread.
    model = tiny_model("kimi_linear")
    handle = adapters.load(model)
    spec = handle.mixer_layer(0)
    module = sys.modules[type(spec.module).__module__]
    store = {}
    with KimiDeltaAttentionAdapter().recording([spec], store), torch.no_grad():
        recorded = module.chunk_kimi_delta_attention
        module.chunk_kimi_delta_attention = lambda *a, **k: recorded(*a, **extra, **k)
        with pytest.raises(RuntimeError, match=match):
            model(input_ids=token_ids()[None], use_cache=False)
    assert module.chunk_kimi_delta_attention is not recorded  # restored on exit
    assert store == {}
