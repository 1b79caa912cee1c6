"""Tests of the operator families: each builder against its reference mixer.

For every family: ``op.dense() @ u`` equals the mixer's own loop on ``u``; where there
is a recurrence, ``recurrence_operator`` of it equals ``op.dense()`` and the
structured spectra equal the dense ones; the ESS of generic members equals the known
state size. All in float64 with small L.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ess_widgets.core import ess_bound, recurrence_operator, spectra, tolerance_ess
from ess_widgets.operators import (
    CausalOperator,
    attention_operator,
    convolution,
    convolution_ref,
    gated_linear_attention,
    linear_attention,
    linear_attention_ref,
    lti,
    lti_simulate,
    random_lti,
    selective_scan_ref,
    selective_ssm,
    softmax_attention,
    softmax_attention_ref,
    ssd,
    ssd_ref,
    weighted_linear_attention,
)

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=F64)


def uniform(g, lo, hi, *shape):
    return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=F64)


def assert_close(actual, expected, rtol=1e-10):
    """``max |actual - expected| <= rtol * max(1, max |expected|)``."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(1.0, float(expected.abs().max()))
    err = float((actual - expected).abs().max())
    assert err <= rtol * scale, f"max error {err:.3g} > {rtol:.1g} * {scale:.3g}"


def amax(t: torch.Tensor) -> float:
    """Largest |entry|, 0 for an empty tensor."""
    return float(t.abs().max()) if t.numel() else 0.0


def assert_structured_spectra(op: CausalOperator):
    """Structured spectra equal the dense ones: relative 1e-8 where >= 1e-6 sigma_1."""
    structured = op.spectra()
    dense = spectra(op.dense())
    K = structured.shape[-1]
    sigma1 = dense[..., :1]
    big = (dense[..., :K] >= 1e-6 * sigma1) & (dense[..., :K] > 0)
    rel = (structured - dense[..., :K]).abs() / torch.where(big, dense[..., :K], 1.0)
    assert amax(rel[big]) <= 1e-8
    # Below 1e-6 sigma_1 both are rounding noise; past K the dense values vanish.
    assert amax((structured - dense[..., :K])[~big]) <= 1e-9 * amax(sigma1)
    assert amax(dense[..., K:]) <= 1e-9 * amax(sigma1)


def relative_ess(s: torch.Tensor) -> torch.Tensor:
    return tolerance_ess(s, 1e-8, relative=True)


def expected_ess(L: int, state: int) -> torch.Tensor:
    return ess_bound(L).clamp(max=state)


# ---------------------------------------------------------------- softmax attention

ATTENTION_CASES = [
    pytest.param((), 8, 2, None, id="L8xd2"),
    pytest.param((2, 3), 16, 4, None, id="B2xH3xL16xd4"),
    pytest.param((3,), 16, 4, 4, id="H3xL16xd4-window4"),
    pytest.param((2,), 12, 3, 1, id="H2xL12xd3-window1"),
    pytest.param((2,), 12, 3, 20, id="H2xL12xd3-window20"),
]


@pytest.mark.parametrize(("batch", "L", "d", "window"), ATTENTION_CASES)
def test_softmax_attention_matches_reference(batch, L, d, window):
    g = gen(0)
    q, k, v = randn(g, *batch, L, d), randn(g, *batch, L, d), randn(g, *batch, L, 5)
    op = softmax_attention(q, k, window=window)
    T = op.dense()
    assert op.kind == "softmax_attention" and op.length == L and op.recurrence is None
    assert T.shape == (*batch, L, L)
    assert_close(T @ v, softmax_attention_ref(q, k, v, window=window))
    assert_close(T.sum(-1), torch.ones(*batch, L))
    assert float(torch.triu(T, 1).abs().max()) == 0.0
    lag = torch.arange(L)[:, None] - torch.arange(L)[None, :]
    if window is not None:
        assert amax(T[..., lag >= window]) == 0.0
        assert bool((T[..., (lag >= 0) & (lag < window)] > 0).all())
    split = torch.arange(1, L)
    expected_tss = split if window is None else split.clamp(max=window)
    assert op.tss.dtype == torch.int64
    assert torch.equal(op.tss, expected_tss)


def test_softmax_attention_scale_and_numpy_input():
    g = gen(1)
    q, k, v = randn(g, 10, 3), randn(g, 10, 3), randn(g, 10, 2)
    op = softmax_attention(q.numpy(), k.numpy(), scale=0.3)
    assert_close(op.dense() @ v, softmax_attention_ref(q, k, v, scale=0.3))
    default = softmax_attention(q, k).dense()
    assert_close(default, softmax_attention(q, k, scale=1 / math.sqrt(3)).dense())


def test_sliding_window_rank_is_at_most_window_minus_one():
    # The TSS counts w cache slots, but a query sees only w - 1 earlier keys.
    g = gen(2)
    L, w = 24, 4
    op = softmax_attention(randn(g, L, 6), randn(g, L, 6), window=w)
    ess = op.tolerance_ess(1e-8, relative=True)
    assert torch.equal(ess, expected_ess(L, w - 1))
    full = softmax_attention(randn(g, L, 6), randn(g, L, 6)).tolerance_ess(1e-8, relative=True)
    assert torch.equal(full, ess_bound(L))


@pytest.mark.parametrize("window", [None, 3], ids=["full", "window3"])
def test_attention_operator_wraps_maps(window):
    g = gen(3)
    q, k = randn(g, 2, 12, 4), randn(g, 2, 12, 4)
    built = softmax_attention(q, k, window=window)
    maps = built.dense()
    wrapped = attention_operator(maps, window=window)
    assert wrapped.dense() is maps  # clean maps are handed out, not copied
    assert wrapped.kind == "softmax_attention" and wrapped.length == 12
    assert torch.equal(wrapped.dense(), built.dense())
    assert torch.equal(wrapped.tss, built.tss)
    # Rounding crumbs above the diagonal are accepted and dropped.
    crumbs = built.dense() + 1e-12 * torch.triu(torch.ones(12, 12, dtype=F64), 1)
    assert float(torch.triu(attention_operator(crumbs).dense(), 1).abs().max()) == 0.0


# ---------------------------------------------------------------- linear attention


def _la_case(family, g, batch, L, d_k):
    """(operator, a for linear_attention_ref) for one linear-attention family."""
    q, k = randn(g, *batch, L, d_k), randn(g, *batch, L, d_k)
    if family == "la":
        return q, k, linear_attention(q, k), None
    if family == "wla-scalar":
        return q, k, weighted_linear_attention(q, k, 0.8), 0.8
    if family == "wla-per-dim":
        decay = uniform(g, 0.5, 1.0, d_k)
        return q, k, weighted_linear_attention(q, k, decay), decay
    if family == "wla-per-head":
        decay = uniform(g, 0.5, 1.0, *batch, d_k)
        return q, k, weighted_linear_attention(q, k, decay), decay[..., None, :]
    if family == "gla":
        gate = uniform(g, 0.3, 1.0, *batch, L, d_k)
        return q, k, gated_linear_attention(q, k, gate), gate
    if family == "gla-scalar-gate":
        gate = uniform(g, 0.3, 1.0, *batch, L, 1)
        return q, k, gated_linear_attention(q, k, gate), gate
    raise AssertionError(family)


LA_FAMILIES = ["la", "wla-scalar", "wla-per-dim", "wla-per-head", "gla", "gla-scalar-gate"]
LA_KINDS = {
    "la": "linear_attention",
    "wla": "weighted_linear_attention",
    "gla": "gated_linear_attention",
}


@pytest.mark.parametrize("family", LA_FAMILIES)
@pytest.mark.parametrize(
    ("batch", "L", "d_k"),
    [pytest.param((), 8, 3, id="L8xdk3"), pytest.param((2, 2), 16, 4, id="B2xH2xL16xdk4")],
)
def test_linear_attention_families(family, batch, L, d_k):
    g = gen(4)
    q, k, op, a = _la_case(family, g, batch, L, d_k)
    v = randn(g, *batch, L, 3)
    T = op.dense()
    assert op.kind == LA_KINDS[family.split("-")[0]]
    assert T.shape == (*batch, L, L)
    assert_close(T @ v, linear_attention_ref(q, k, v, a))
    a_rec, b_rec, c_rec = op.recurrence
    assert a_rec.shape == b_rec.shape == c_rec.shape == (*batch, L, d_k)
    assert_close(recurrence_operator(*op.recurrence), T)
    assert_structured_spectra(op)
    assert torch.equal(op.tss, torch.full((L - 1,), d_k))
    assert bool((op.tolerance_ess(1e-8, relative=True) <= d_k).all())


def test_linear_attention_ess_is_key_dimension():
    g = gen(5)
    L, d_k = 24, 3
    op = linear_attention(randn(g, L, d_k), randn(g, L, d_k))
    assert torch.equal(relative_ess(op.spectra()), expected_ess(L, d_k))
    assert torch.equal(relative_ess(spectra(op.dense())), expected_ess(L, d_k))


def test_weighted_linear_attention_keeps_float32():
    g = gen(6)
    q, k = randn(g, 6, 2).float(), randn(g, 6, 2).float()
    op = weighted_linear_attention(q, k, 0.5)
    assert op.dense().dtype == torch.float32 and op.recurrence[0].dtype == torch.float32
    expected = torch.tril(q.double() @ k.double().mT) * 0.5 ** (
        torch.arange(6)[:, None] - torch.arange(6)[None, :]
    ).clamp(min=0)
    assert_close(op.dense().double(), expected, rtol=1e-6)


# ---------------------------------------------------------------- selective SSMs


def _s6_inputs(g, batch, L, D, N):
    dt = uniform(g, 0.05, 0.6, *batch, L, D)
    A = -uniform(g, 0.2, 2.0, D, N)
    return dt, A, randn(g, *batch, L, N), randn(g, *batch, L, N)


@pytest.mark.parametrize(
    ("batch", "L", "D", "N"),
    [pytest.param((), 8, 1, 2, id="L8xD1xN2"), pytest.param((2,), 16, 3, 4, id="B2xL16xD3xN4")],
)
def test_selective_ssm(batch, L, D, N):
    g = gen(7)
    dt, A, B, C = _s6_inputs(g, batch, L, D, N)
    u = randn(g, *batch, L, D)
    op = selective_ssm(dt, A, B, C)
    T = op.dense()
    assert op.kind == "selective_ssm" and T.shape == (*batch, D, L, L)
    y = (T @ u.mT[..., None])[..., 0].mT  # channel c: T_c @ u[:, c]
    assert_close(y, selective_scan_ref(u, dt, A, B, C))
    assert all(x.shape == (*batch, D, L, N) for x in op.recurrence)
    assert_close(recurrence_operator(*op.recurrence), T)
    assert_structured_spectra(op)
    assert torch.equal(op.tss, torch.full((L - 1,), N))
    assert bool((op.tolerance_ess(1e-8, relative=True) <= N).all())


def test_selective_ssm_closed_form_entry():
    g = gen(8)
    dt, A, B, C = _s6_inputs(g, (), 6, 2, 3)
    T = selective_ssm(dt, A, B, C).dense()
    i, j, c = 4, 1, 1
    expected = sum(
        C[i, n] * math.exp(A[c, n] * dt[j + 1 : i + 1, c].sum()) * dt[j, c] * B[j, n]
        for n in range(3)
    )
    assert math.isclose(float(T[c, i, j]), float(expected), rel_tol=1e-12)


def ssd_loops(u, dt, A, B, C, groups=None):
    """The SSD recurrence with explicit loops over samples, heads, time and state.

    Written from ``h_t = exp(dt_t A_h) h_(t-1) + dt_t B_t u_t``, ``y_t = C_t . h_t``
    per head, reading ``B``, ``C`` in their own layout: ``(..., L, N)`` shared by all
    heads, or ``(..., L, G, N)`` with head ``h`` in group ``h // (H // G)``
    (``groups=G``; ``G = H``: one per head). Returns ``y`` ``(..., L, H)`` and the
    operators ``T`` ``(..., H, L, L)`` built entry by entry from the same formula.
    """
    *batch, L, H = dt.shape
    N = B.shape[-1]
    y = torch.zeros(*batch, L, H, dtype=F64)
    T = torch.zeros(*batch, H, L, L, dtype=F64)
    for index in np.ndindex(*batch):

        def proj(X, t, h, n, index=index):
            if groups is None:
                return float(X[index][t, n])
            return float(X[index][t, h // (H // groups), n])

        for h in range(H):
            state = [0.0] * N
            for t in range(L):
                step = float(dt[index][t, h])
                decay = math.exp(step * float(A[h]))
                for n in range(N):
                    state[n] = decay * state[n] + step * proj(B, t, h, n) * float(u[index][t, h])
                y[index][t, h] = sum(proj(C, t, h, n) * state[n] for n in range(N))
                for j in range(t + 1):
                    log_decay = float(A[h]) * float(dt[index][j + 1 : t + 1, h].sum())
                    T[index][h, t, j] = (
                        sum(proj(C, t, h, n) * proj(B, j, h, n) for n in range(N))
                        * math.exp(log_decay)
                        * float(dt[index][j, h])
                    )
    return y, T


@pytest.mark.parametrize(
    ("batch", "L", "H", "N", "groups"),
    [
        pytest.param((), 8, 2, 3, None, id="L8xH2xN3-shared"),
        pytest.param((2,), 10, 3, 4, None, id="B2xL10xH3xN4-shared"),
        pytest.param((2,), 10, 3, 4, 3, id="B2xL10xH3xN4-per-head"),
        pytest.param((), 9, 4, 2, 2, id="L9xH4xN2-groups2"),
    ],
)
def test_ssd(batch, L, H, N, groups):
    g = gen(9)
    dt = uniform(g, 0.05, 0.6, *batch, L, H)
    A = -uniform(g, 0.2, 2.0, H)
    shape = (*batch, L, N) if groups is None else (*batch, L, groups, N)
    B, C = randn(g, *shape), randn(g, *shape)
    u = randn(g, *batch, L, H)
    # The builder takes one B, C per head: repeat each group for its heads.
    if groups is None:
        B_in, C_in = B, C
    else:
        B_in, C_in = (X.repeat_interleave(H // groups, dim=-2) for X in (B, C))
    op = ssd(dt, A, B_in, C_in)
    T = op.dense()
    y_loop, T_loop = ssd_loops(u, dt, A, B, C, groups)
    assert op.kind == "ssd" and T.shape == (*batch, H, L, L)
    assert_close(T, T_loop)
    y = (T @ u.mT[..., None])[..., 0].mT
    assert_close(y, y_loop)
    assert_close(ssd_ref(u, dt, A, B_in, C_in), y_loop)
    assert all(x.shape == (*batch, H, L, N) for x in op.recurrence)
    assert_close(recurrence_operator(*op.recurrence), T_loop)
    assert_structured_spectra(op)
    assert torch.equal(op.tss, torch.full((L - 1,), N))


def test_ssd_is_selective_ssm_with_tied_decay():
    # SSD is S6 with A[c, n] = A_h for all n: same operators.
    g = gen(10)
    dt = uniform(g, 0.05, 0.6, 12, 2)
    A = -uniform(g, 0.2, 2.0, 2)
    B, C = randn(g, 12, 3), randn(g, 12, 3)
    s6 = selective_ssm(dt, A[:, None].expand(2, 3), B, C)
    assert_close(ssd(dt, A, B, C).dense(), s6.dense())


# ---------------------------------------------------------------- LTI


@pytest.mark.parametrize("D", [0.0, 0.7], ids=["D0", "D0.7"])
@pytest.mark.parametrize("n", [1, 3], ids=["n1", "n3"])
def test_lti_matches_simulation(n, D):
    A, B, C = random_lti(n, seed=n)
    L = 16
    u = randn(gen(11), 4, L)
    op = lti(A, B, C, L, D=D)
    T = op.dense()
    assert op.kind == "lti" and T.shape == (L, L)
    assert_close((T @ u[..., None])[..., 0], lti_simulate(A, B, C, u, D=D))
    assert torch.equal(torch.diagonal(T), torch.full((L,), D, dtype=F64))
    a, b, c = op.recurrence
    assert a.shape == (L, n + 1, n + 1) and b.shape == c.shape == (L, n + 1)
    # The augmented recurrence is exact, diagonal included.
    assert_close(recurrence_operator(*op.recurrence), T, rtol=1e-13)
    assert torch.equal(op.tss, torch.full((L - 1,), n))


def test_lti_batched_and_column_shapes():
    g = gen(12)
    systems = [random_lti(3, seed=s) for s in range(2)]
    A = torch.stack([s[0] for s in systems])  # (2, 3, 3)
    B = torch.stack([s[1] for s in systems])[..., None]  # (2, 3, 1): columns
    C = torch.stack([s[2] for s in systems])[:, None, :]  # (2, 1, 3): rows
    D = torch.tensor([0.0, -0.5], dtype=F64)
    op = lti(A, B, C, 12, D=D)
    T = op.dense()
    assert T.shape == (2, 12, 12)
    for s, (A_s, B_s, C_s) in enumerate(systems):
        assert_close(T[s], lti(A_s, B_s, C_s, 12, D=float(D[s])).dense())
    u = randn(g, 2, 12)
    assert_close((T @ u[..., None])[..., 0], lti_simulate(A, B, C, u, D=D))
    assert_close(recurrence_operator(*op.recurrence), T, rtol=1e-13)
    assert_structured_spectra(op)


@pytest.mark.parametrize("n", [2, 3, 5], ids=["n2", "n3", "n5"])
def test_lti_ess_is_state_size(n):
    L = 24
    op = lti(*random_lti(n, seed=100 + n), L)
    expected = expected_ess(L, n)
    assert torch.equal(relative_ess(spectra(op.dense())), expected)
    assert torch.equal(relative_ess(op.spectra()), expected)
    assert_structured_spectra(op)


def test_random_lti():
    A, B, C = random_lti(4, seed=0)
    assert A.shape == (4, 4) and B.shape == C.shape == (4,) and A.dtype == F64
    assert math.isclose(float(torch.linalg.eigvals(A).abs().max()), 0.9, rel_tol=1e-12)
    assert all(torch.equal(x, y) for x, y in zip(random_lti(4, seed=0), (A, B, C), strict=True))
    assert random_lti(2, seed=0, dtype=torch.float32)[0].dtype == torch.float32


# ---------------------------------------------------------------- convolution


@pytest.mark.parametrize(
    ("batch", "k", "L"),
    [
        pytest.param((), 1, 8, id="k1xL8"),
        pytest.param((), 4, 12, id="k4xL12"),
        pytest.param((3,), 5, 16, id="C3xk5xL16"),
        pytest.param((2,), 20, 10, id="C2xk20xL10-kernel-longer-than-L"),
    ],
)
def test_convolution(batch, k, L):
    g = gen(13)
    h, u = randn(g, *batch, k), randn(g, *batch, L)
    op = convolution(h, L)
    T = op.dense()
    assert op.kind == "convolution" and T.shape == (*batch, L, L)
    y = convolution_ref(h, u)
    assert_close((T @ u[..., None])[..., 0], y)
    padded = torch.nn.functional.pad(u, (k - 1, 0))
    conv = torch.stack(
        [(padded[..., t : t + k] * h.flip(-1)).sum(-1) for t in range(L)], dim=-1
    )  # cross-correlation with the flipped kernel, left padding: torch's conv1d
    assert_close(y, conv)
    assert_close(recurrence_operator(*op.recurrence), T)
    assert_structured_spectra(op)
    assert torch.equal(op.tss, torch.full((L - 1,), k - 1))


@pytest.mark.parametrize("k", [1, 2, 6], ids=["k1", "k2", "k6"])
def test_convolution_ess_is_kernel_length_minus_one(k):
    L = 24
    op = convolution(randn(gen(14), k), L)
    assert torch.equal(relative_ess(spectra(op.dense())), expected_ess(L, k - 1))
    assert torch.equal(relative_ess(op.spectra()), expected_ess(L, k - 1))


# ---------------------------------------------------------------- bad input


def _qk(L=8, d=4, Lk=None, dk=None, batch_q=(), batch_k=()):
    g = gen(15)
    return randn(g, *batch_q, L, d), randn(g, *batch_k, Lk or L, dk or d)


def _s6(**change):
    g = gen(16)
    args = dict(zip("dt A B C".split(), _s6_inputs(g, (), 8, 2, 3), strict=True))
    args.update(change)
    return args


NAN_Q = _qk()[0].clone()
NAN_Q[3, 1] = float("nan")
ONES = torch.ones(8, 3, dtype=F64)

BAD_INPUT = [
    pytest.param(
        lambda: softmax_attention(*_qk(Lk=7)),
        ValueError,
        r"`k`.*sequence length",
        id="attn-L-mismatch",
    ),
    pytest.param(
        lambda: softmax_attention(*_qk(dk=3)),
        ValueError,
        r"`k`.*key dimension",
        id="attn-d-mismatch",
    ),
    pytest.param(
        lambda: softmax_attention(*_qk(batch_q=(2,), batch_k=(3,))),
        ValueError,
        r"`q` \(2,\), `k` \(3,\)",
        id="attn-batch-mismatch",
    ),
    pytest.param(
        lambda: softmax_attention(*_qk(), window=0),
        ValueError,
        r"`window` must be >= 1",
        id="attn-window0",
    ),
    pytest.param(
        lambda: softmax_attention(*_qk(), window=2.5),
        TypeError,
        r"`window`",
        id="attn-window-float",
    ),
    pytest.param(
        lambda: softmax_attention(NAN_Q, _qk()[1]), ValueError, r"`q` contains 1 NaN", id="attn-nan"
    ),
    pytest.param(lambda: softmax_attention(*_qk(L=1)), ValueError, r"`q`.*L >= 2", id="attn-L1"),
    pytest.param(
        lambda: softmax_attention_ref(*_qk(), ONES[:7]),
        ValueError,
        r"`v`.*sequence length",
        id="attn-ref-v-L",
    ),
    pytest.param(
        lambda: attention_operator(torch.ones(8, 8, dtype=F64)),
        ValueError,
        r"`weights` is not causal",
        id="maps-not-causal",
    ),
    pytest.param(
        lambda: attention_operator(torch.ones(8, 7, dtype=F64)),
        ValueError,
        r"`weights` must be square",
        id="maps-not-square",
    ),
    pytest.param(
        lambda: attention_operator(torch.tril(torch.ones(8, 8)), window=3),
        ValueError,
        r"`weights`.*outside the sliding window",
        id="maps-window",
    ),
    pytest.param(
        lambda: linear_attention(*_qk(dk=3)), ValueError, r"`k`.*key dimension", id="la-d-mismatch"
    ),
    pytest.param(
        lambda: linear_attention(NAN_Q, _qk()[1]), ValueError, r"`q` contains 1 NaN", id="la-nan"
    ),
    pytest.param(
        lambda: linear_attention("q", "k"), TypeError, r"`q` must be a torch.Tensor", id="la-type"
    ),
    pytest.param(
        lambda: weighted_linear_attention(*_qk(), 1.5),
        ValueError,
        r"`decay` must lie in \(0, 1\]",
        id="wla-decay-1.5",
    ),
    pytest.param(
        lambda: weighted_linear_attention(*_qk(), torch.ones(3, dtype=F64)),
        ValueError,
        r"`decay`.*d_k = 4",
        id="wla-decay-shape",
    ),
    pytest.param(
        lambda: gated_linear_attention(*_qk(d=3), torch.zeros(8, 3, dtype=F64)),
        ValueError,
        r"`gate` must lie in \(0, 1\]",
        id="gla-gate0",
    ),
    pytest.param(
        lambda: gated_linear_attention(*_qk(d=3), ONES + 0.5),
        ValueError,
        r"`gate` must lie in \(0, 1\]",
        id="gla-gate1.5",
    ),
    pytest.param(
        lambda: gated_linear_attention(*_qk(d=3), ONES[:6]),
        ValueError,
        r"`gate`.*sequence length",
        id="gla-gate-L",
    ),
    pytest.param(
        lambda: gated_linear_attention(*_qk(d=3), ONES * float("nan")),
        ValueError,
        r"`gate` contains 24 NaN",
        id="gla-gate-nan",
    ),
    pytest.param(
        lambda: selective_ssm(**_s6(A=torch.ones(2, 3, dtype=F64))),
        ValueError,
        r"`A` must be <= 0.*A_log",
        id="s6-A-positive",
    ),
    pytest.param(
        lambda: selective_ssm(**_s6(A=-torch.ones(3, 3, dtype=F64))),
        ValueError,
        r"`A`.*channel count D",
        id="s6-A-D-mismatch",
    ),
    pytest.param(
        lambda: selective_ssm(**_s6(A=-torch.ones(2, dtype=F64))),
        ValueError,
        r"`A` must have shape \(D, N\)",
        id="s6-A-1d",
    ),
    pytest.param(
        lambda: selective_ssm(**_s6(B=torch.ones(8, 4, dtype=F64))),
        ValueError,
        r"`B`.*state size N",
        id="s6-B-N-mismatch",
    ),
    pytest.param(
        lambda: selective_ssm(**_s6(C=torch.ones(7, 3, dtype=F64))),
        ValueError,
        r"`C`.*sequence length",
        id="s6-C-L-mismatch",
    ),
    pytest.param(
        lambda: selective_ssm(**_s6(dt=-torch.ones(8, 2, dtype=F64))),
        ValueError,
        r"`dt` must be >= 0.*softplus",
        id="s6-dt-negative",
    ),
    pytest.param(
        lambda: selective_scan_ref(torch.ones(8, 3), **_s6()),
        ValueError,
        r"`u`.*channel count D",
        id="s6-ref-u-D",
    ),
    pytest.param(
        lambda: ssd(torch.ones(8, 2), -torch.ones(2, 3), ONES, ONES),
        ValueError,
        r"`A` must have shape \(H,\)",
        id="ssd-A-2d",
    ),
    pytest.param(
        lambda: ssd(torch.ones(8, 2), -torch.ones(2), torch.ones(8, 3, 3), torch.ones(8, 3, 3)),
        ValueError,
        r"`B`.*head count H",
        id="ssd-B-H-mismatch",
    ),
    pytest.param(
        lambda: lti(torch.ones(2, 3), torch.ones(2), torch.ones(2), 8),
        ValueError,
        r"`A` must be square",
        id="lti-A-not-square",
    ),
    pytest.param(
        lambda: lti(torch.eye(3), torch.ones(2), torch.ones(3), 8),
        ValueError,
        r"`B` must have shape.*n = 3",
        id="lti-B-n-mismatch",
    ),
    pytest.param(
        lambda: lti(torch.eye(3), torch.ones(3), torch.ones(3, 1), 8),
        ValueError,
        r"`C` must have shape.*n = 3",
        id="lti-C-column",
    ),
    pytest.param(
        lambda: lti(torch.eye(2), torch.ones(2), torch.ones(2), 1),
        ValueError,
        r"`L` must be at least 2",
        id="lti-L1",
    ),
    pytest.param(
        lambda: lti(torch.eye(2), torch.ones(2), torch.ones(2), 8.0),
        TypeError,
        r"`L` must be an int",
        id="lti-L-float",
    ),
    pytest.param(
        lambda: lti(torch.eye(2), torch.ones(2), torch.ones(2), 8, D=float("inf")),
        ValueError,
        r"`D` contains 0 NaN and 1 Inf",
        id="lti-D-inf",
    ),
    pytest.param(lambda: random_lti(0), ValueError, r"`n` must be an int >= 1", id="random-lti-n0"),
    pytest.param(
        lambda: convolution(torch.tensor([1.0, float("nan")]), 8),
        ValueError,
        r"`h` contains 1 NaN",
        id="conv-nan",
    ),
    pytest.param(
        lambda: convolution(torch.ones(2, 0), 8),
        ValueError,
        r"`h` must hold a kernel of length k >= 1",
        id="conv-empty",
    ),
    pytest.param(
        lambda: convolution_ref(torch.ones(2, 3), torch.ones(3, 8)),
        ValueError,
        r"`h` \(2,\), `u` \(3,\)",
        id="conv-ref-batch",
    ),
    # Empty heads, channels or features: a ValueError naming the argument, not an empty
    # operator or a third-party error further down.
    pytest.param(
        lambda: linear_attention(torch.ones(0, 8, 4), torch.ones(0, 8, 4)),
        ValueError,
        r"`q` is empty: shape \(0, 8, 4\) has size 0 in dimension\(s\) \[0\]",
        id="la-no-heads",
    ),
    pytest.param(
        lambda: softmax_attention(torch.ones(8, 4), torch.ones(8, 0)),
        ValueError,
        r"`k` is empty",
        id="attn-k-d0",
    ),
    pytest.param(
        lambda: selective_ssm(torch.ones(8, 0), -torch.ones(0, 3), ONES, ONES),
        ValueError,
        r"`dt` is empty.*dimension\(s\) \[1\]",
        id="s6-no-channels",
    ),
    pytest.param(
        lambda: ssd(torch.ones(8, 2), -torch.ones(2), torch.ones(8, 0), torch.ones(8, 0)),
        ValueError,
        r"`B` is empty",
        id="ssd-N0",
    ),
    pytest.param(
        lambda: convolution(torch.ones(0, 3), 8),
        ValueError,
        r"`h` is empty.*dimension\(s\) \[0\]",
        id="conv-no-channels",
    ),
    pytest.param(
        lambda: attention_operator(torch.zeros(0, 8, 8), window=3),
        ValueError,
        r"`weights` is empty",
        id="maps-no-heads",
    ),
    pytest.param(
        lambda: lti(torch.ones(0, 0), torch.ones(0), torch.ones(0), 8),
        ValueError,
        r"`A` is empty",
        id="lti-n0",
    ),
    pytest.param(
        lambda: gated_linear_attention(*_qk(d=3), torch.ones(8, 0)),
        ValueError,
        r"`gate` is empty",
        id="gla-gate-empty",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), BAD_INPUT)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_public_api():
    import importlib
    import inspect
    import pkgutil

    import ess_widgets.operators as ops

    # every family module, including ones added later: none may be left unexported
    modules = [m.name for m in pkgutil.iter_modules(ops.__path__) if not m.name.startswith("_")]
    assert {"attention", "base", "convolution", "linear_attention", "lti", "ssm"} <= set(modules)
    exported = set()
    for name in modules:
        module = importlib.import_module(f"ess_widgets.operators.{name}")
        for public in module.__all__:
            # every public name of a family module is exported by the package, as itself
            assert getattr(ops, public) is getattr(module, public), public
        exported |= set(module.__all__)
    assert set(ops.__all__) == exported
    assert len(ops.__all__) == len(set(ops.__all__))
    for name in ops.__all__:
        obj = getattr(ops, name)
        doc = inspect.getdoc(obj) or ""
        assert doc, f"{name} has no docstring"
        if inspect.isfunction(obj) and inspect.signature(obj).parameters:
            assert "Parameters" in doc or "Returns" in doc, f"{name}: no numpy-style sections"
    # Every builder returns a CausalOperator (the one type the rest of the package reads).
    q, k = _qk()
    built = [
        ops.softmax_attention(q, k),
        ops.linear_attention(q, k),
        ops.weighted_linear_attention(q, k, 0.5),
        ops.gated_linear_attention(q, k, torch.full((8, 4), 0.5, dtype=F64)),
        ops.selective_ssm(**_s6()),
        ops.ssd(torch.ones(8, 2), -torch.ones(2), ONES, ONES),
        ops.lti(*ops.random_lti(2, seed=0), 8),
        ops.convolution(torch.ones(3), 8),
        ops.attention_operator(torch.tril(torch.ones(8, 8))),
    ]
    assert all(isinstance(op, ops.CausalOperator) and op.length == 8 for op in built)


@pytest.mark.parametrize("decay", [np.float64(0.5), np.float32(0.5), 0.5, torch.tensor(0.5)])
def test_scalar_decays_of_any_kind(decay):
    q, k = _qk()
    op = weighted_linear_attention(q, k, decay)
    assert op.recurrence[0].dtype == F64  # a scalar does not change the inputs' dtype
    assert_close(op.dense(), weighted_linear_attention(q, k, 0.5).dense(), rtol=0)
    op32 = weighted_linear_attention(q.float(), k.float(), decay)
    assert op32.recurrence[0].dtype == torch.float32 and op32.dense().dtype == torch.float32


# ---------------------------------------------------------------- operators too large to build

L_HUGE = 10**6


def _huge(builder):
    """One operator of every family at L = 10**6 (its inputs: a few MB)."""
    ones = torch.ones(L_HUGE, 1)
    return {
        "softmax": lambda: softmax_attention(torch.ones(2, L_HUGE, 1), torch.ones(2, L_HUGE, 1)),
        "linear": lambda: linear_attention(torch.ones(2, L_HUGE, 1), torch.ones(2, L_HUGE, 1)),
        "gla": lambda: gated_linear_attention(ones, ones, torch.full((L_HUGE, 1), 0.5)),
        "s6": lambda: selective_ssm(torch.full((L_HUGE, 2), 0.1), -torch.ones(2, 1), ones, ones),
        "ssd": lambda: ssd(torch.full((L_HUGE, 2), 0.1), -torch.ones(2), ones, ones),
        "lti": lambda: lti(*random_lti(2, seed=0, dtype=torch.float32), L_HUGE),
        "conv": lambda: convolution(torch.ones(3, 4), L_HUGE),
    }[builder]()


@pytest.mark.parametrize("builder", ["softmax", "linear", "gla", "s6", "ssd", "lti", "conv"])
def test_dense_refuses_what_cannot_fit_before_allocating(builder):
    op = _huge(builder)
    with pytest.raises(
        ValueError,
        match=r"\.dense\(\): a dense operator of shape \(.*1000000, "
        r"1000000\).* needs [\d,]+ bytes .*more than this machine's",
    ):
        op.dense()
    with pytest.raises(ValueError, match="spectra"):
        op.dense()
    if op.recurrence is None:  # spectra() goes through dense(): refused the same way
        with pytest.raises(ValueError, match="needs"):
            op.spectra()


def test_dense_size_check_counts_batch_and_dtype(monkeypatch):
    from ess_widgets.core import _validation

    q, k = torch.ones(3, 10, 2), torch.ones(1, 10, 2, dtype=F64)  # promoted to float64
    cases = [
        (linear_attention(q, k), 3 * 10 * 10 * 8),
        (softmax_attention(q.float(), k.float()), 3 * 10 * 10 * 4),
        (convolution(torch.ones(2, 5, 3), 10), 2 * 5 * 10 * 10 * 4),
        (lti(*random_lti(2, seed=0), 10), 10 * 10 * 8),
    ]
    for op, nbytes in cases:
        monkeypatch.setattr(_validation, "physical_memory", lambda n=nbytes: n)
        assert op.dense().numel() * op.dense().element_size() == nbytes  # fits exactly
        monkeypatch.setattr(_validation, "physical_memory", lambda n=nbytes: n - 1)
        with pytest.raises(ValueError, match=f"needs {nbytes:,} bytes"):
            op.dense()
    # Maps that already exist are handed out without a check.
    monkeypatch.setattr(_validation, "physical_memory", lambda: 1)
    maps = torch.tril(torch.ones(2, 6, 6))
    assert attention_operator(maps).dense() is maps


def test_declared_layout_wins_over_the_recurrence(monkeypatch):
    from ess_widgets.core import _validation

    op = linear_attention(torch.ones(2, 6, 3), torch.ones(2, 6, 3))
    wide = CausalOperator(
        kind="custom",
        length=6,
        tss=op.tss,
        recurrence=op.recurrence,
        dense_fn=op.dense_fn,
        batch_shape=(5,),
        dtype=torch.float16,
    )
    monkeypatch.setattr(_validation, "physical_memory", lambda: 5 * 36 * 2 - 1)
    with pytest.raises(ValueError, match=r"custom\.dense\(\).*\(5, 6, 6\) in torch.float16"):
        wide.dense()
    unknown = CausalOperator(kind="maps", length=6, tss=op.tss, dense_fn=op.dense_fn)
    assert unknown.dense().shape == (2, 6, 6)  # no layout known: not checked
