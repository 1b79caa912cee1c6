"""WKV-4, RG-LRU, gated short convolution, mLSTM and lightning attention operators.

Each builder's ``T @ u`` is held against its plain reference loop (the mixer's own
definition, one step at a time), its recurrence against its dense form, and the
structured spectra against the SVD of every split block of the dense form.
"""

import pytest
import torch

from ess_widgets.core import recurrence_operator, spectra
from ess_widgets.operators import (
    gated_short_convolution,
    gated_short_convolution_ref,
    linear_attention_ref,
    mlstm,
    mlstm_ref,
    rg_lru,
    rg_lru_ref,
    weighted_linear_attention,
    wkv4,
    wkv4_ref,
)

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=gen(seed), dtype=F64) * scale


def per_channel(T, x):
    """Apply ``(..., D, L, L)`` operators to ``(..., L, D)`` inputs, channel by channel."""
    return (T @ x.mT[..., None]).squeeze(-1).mT


def check_structure(op, N):
    """recurrence == dense, and recurrence spectra == SVD spectra (rank <= N)."""
    T = op.dense()
    torch.testing.assert_close(recurrence_operator(*op.recurrence), T, rtol=1e-12, atol=1e-12)
    dense = spectra(T)
    s = op.spectra()
    K = s.shape[-1]
    scale = float(dense[..., :1].amax())
    torch.testing.assert_close(s, dense[..., :K], rtol=1e-9, atol=1e-11 * scale)
    if dense.shape[-1] > N:
        assert float(dense[..., N:].abs().max()) <= 1e-11 * scale


# ---------------------------------------------------------------------- WKV-4
def wkv_inputs(L=14, D=3, batch=(2,)):
    k = randn(*batch, L, D, seed=1, scale=2.0)
    log_decay = -torch.exp(randn(D, seed=2))
    bonus = randn(D, seed=3)
    v = randn(*batch, L, D, seed=4)
    return log_decay, bonus, k, v


def test_wkv4_times_v_is_the_reference_loop():
    log_decay, bonus, k, v = wkv_inputs()
    op = wkv4(log_decay, bonus, k)
    T = op.dense()
    assert T.shape == (2, 3, 14, 14) and op.kind == "wkv4"
    torch.testing.assert_close(per_channel(T, v), wkv4_ref(log_decay, bonus, k, v))
    torch.testing.assert_close(T.sum(-1), torch.ones(2, 3, 14, dtype=F64))  # softmax rows
    assert torch.equal(op.tss, torch.ones(13, dtype=torch.int64))


def test_wkv4_recurrence_and_spectra_match_the_dense_form():
    log_decay, bonus, k, _ = wkv_inputs()
    check_structure(wkv4(log_decay, bonus, k), 1)


def test_wkv4_bonus_only_touches_the_diagonal():
    # Up to the row normalizer Z_t, changing the bonus changes only T[t, t].
    log_decay, bonus, k, _ = wkv_inputs(batch=())
    T1 = wkv4(log_decay, bonus, k).dense()
    T2 = wkv4(log_decay, bonus + 3.0, k).dense()
    ratio = T1.diagonal(dim1=-2, dim2=-1) / T2.diagonal(dim1=-2, dim2=-1)
    z1 = 1.0 / (1.0 - T1.diagonal(dim1=-2, dim2=-1))  # past mass 1 - T[t, t] = D/Z
    z2 = 1.0 / (1.0 - T2.diagonal(dim1=-2, dim2=-1))
    off = ~torch.eye(14, dtype=torch.bool)
    rescaled = (T1 * z1[..., None])[..., 1:, :] - (T2 * z2[..., None])[..., 1:, :]
    assert float(rescaled.masked_fill(~off[1:], 0.0).abs().max()) < 1e-12
    assert float((ratio[..., 1:] - 1).abs().min()) > 1e-3  # the diagonal did change


def test_wkv4_stays_exact_for_decays_that_underflow():
    # w = -3000: e^w is 0 in float64, but the lag-1 term T[t, t-1] carries no decay.
    log_decay = torch.tensor([-3000.0, -1e-4], dtype=F64)
    k = randn(10, 2, seed=5, scale=3.0)
    op = wkv4(log_decay, torch.zeros(2, dtype=F64), k)
    T = op.dense()
    assert float(T[0].diagonal(-1).abs().min()) > 0  # lag 1 survives
    assert float(torch.tril(T[0], -2).abs().max()) == 0.0  # lag 2 and more decayed
    check_structure(op, 1)
    v = randn(10, 2, seed=6)
    torch.testing.assert_close(
        per_channel(T, v), wkv4_ref(log_decay, torch.zeros(2, dtype=F64), k, v)
    )


def test_wkv4_refuses_a_growing_decay():
    with pytest.raises(ValueError, match=r"log_decay.*<= 0.*time_decay"):
        wkv4(torch.tensor([0.5]), torch.tensor([0.0]), torch.zeros(4, 1))
    with pytest.raises(ValueError, match=r"bonus.*channel count D"):
        wkv4(torch.tensor([-0.5]), torch.zeros(2), torch.zeros(4, 1))


# --------------------------------------------------------------------- RG-LRU
def test_rg_lru_times_x_is_the_reference_loop():
    x = randn(2, 15, 4, seed=1)
    log_a = -torch.rand(2, 15, 4, generator=gen(2), dtype=F64) * 2
    gate = torch.rand(2, 15, 4, generator=gen(3), dtype=F64)
    op = rg_lru(log_a, gate)
    T = op.dense()
    assert T.shape == (2, 4, 15, 15) and op.kind == "rg_lru"
    torch.testing.assert_close(per_channel(T, x), rg_lru_ref(x, log_a, gate))
    # The first input is not scaled by sqrt(1 - a^2): a document start.
    torch.testing.assert_close(T[..., 0, 0], gate[:, 0].expand(2, 4))
    check_structure(op, 1)


def test_rg_lru_keeps_a_gate_near_one_accurate():
    # 1 - a^2 for a = exp(-1e-12): by expm1, not 1 - a * a (which would round).
    log_a = torch.full((4, 1), -1e-12, dtype=F64)
    T = rg_lru(log_a, torch.ones(4, 1, dtype=F64)).dense()
    torch.testing.assert_close(T[0, 1, 1], torch.tensor(2e-12, dtype=F64).sqrt(), rtol=1e-6, atol=0)


def test_rg_lru_refuses_a_positive_log_gate():
    with pytest.raises(ValueError, match=r"log_a.*<= 0"):
        rg_lru(torch.full((3, 1), 0.1), torch.ones(3, 1))


# ---------------------------------------------------------- gated short conv
def test_gated_short_convolution_times_x_is_the_reference_loop():
    h = randn(3, 4, seed=1)
    B, C, x = randn(2, 13, 3, seed=2), randn(2, 13, 3, seed=3), randn(2, 13, 3, seed=4)
    op = gated_short_convolution(h, B, C)
    T = op.dense()
    assert T.shape == (2, 3, 13, 13) and op.kind == "gated_short_convolution"
    torch.testing.assert_close(per_channel(T, x), gated_short_convolution_ref(h, B, C, x))
    assert float(torch.tril(T, -4).abs().max()) == 0.0  # a width-4 filter
    assert torch.equal(op.tss, torch.full((12,), 3))
    check_structure(op, 3)


def test_gated_short_convolution_equals_torch_conv1d():
    # The Conv1d convention: weight (D, 1, K), K - 1 left padding -> h = weight.flip(-1).
    D, K, L = 3, 3, 9
    weight = randn(D, 1, K, seed=7)
    B, C, x = randn(L, D, seed=8), randn(L, D, seed=9), randn(L, D, seed=10)
    conv = torch.nn.functional.conv1d((B * x).mT[None], weight, padding=K - 1, groups=D)
    expected = C * conv[0, :, :L].mT
    T = gated_short_convolution(weight[:, 0].flip(-1), B, C).dense()
    torch.testing.assert_close(per_channel(T, x), expected)


def test_gated_short_convolution_checks_the_filter():
    with pytest.raises(ValueError, match="`h` must have shape \\(D, K\\)"):
        gated_short_convolution(torch.ones(3), torch.ones(4, 3), torch.ones(4, 3))
    with pytest.raises(ValueError, match="`B` has channel count D"):
        gated_short_convolution(torch.ones(2, 3), torch.ones(4, 3), torch.ones(4, 3))


# ---------------------------------------------------------------------- mLSTM
def mlstm_inputs(H=2, L=16, d=4, d_v=5):
    q, k, v = randn(H, L, d, seed=1), randn(H, L, d, seed=2), randn(H, L, d_v, seed=3)
    igate, fgate = randn(H, L, seed=4, scale=3.0), randn(H, L, seed=5, scale=3.0)
    return q, k, v, igate, fgate


@pytest.mark.parametrize("eps", [1e-6, 0.5])
def test_mlstm_times_v_is_the_reference_loop(eps):
    q, k, v, igate, fgate = mlstm_inputs()
    op = mlstm(q, k, igate, fgate, eps=eps)
    T = op.dense()
    assert T.shape == (2, 16, 16) and op.kind == "mlstm"
    torch.testing.assert_close(T @ v, mlstm_ref(q, k, v, igate, fgate, eps=eps))
    assert torch.equal(op.tss, torch.full((15,), 4))
    check_structure(op, 4)


def test_mlstm_batched_inputs_equal_each_item_alone():
    # (batch, heads, L, d): the gates' time axis is the last one, not axis 1
    q, k, v = randn(2, 3, 16, 4, seed=1), randn(2, 3, 16, 4, seed=2), randn(2, 3, 16, 5, seed=3)
    igate, fgate = randn(2, 3, 16, seed=4, scale=3.0), randn(2, 3, 16, seed=5, scale=3.0)
    op = mlstm(q, k, igate, fgate)
    T = op.dense()
    assert T.shape == (2, 3, 16, 16)
    torch.testing.assert_close(T @ v, mlstm_ref(q, k, v, igate, fgate))
    for item in range(2):
        alone = mlstm(q[item], k[item], igate[item], fgate[item]).dense()
        torch.testing.assert_close(T[item], alone)
    check_structure(op, 4)


def test_mlstm_normalizer_rescales_rows_of_a_gated_linear_attention():
    # Without the normalizer, T is q~_t . k_j prod f e^(i_j): divide row t by it.
    q, k, _, igate, fgate = mlstm_inputs()
    T = mlstm(q, k, igate, fgate).dense()
    log_f = torch.nn.functional.logsigmoid(fgate)
    raw = linear_attention_ref(
        q / 2.0,
        k * torch.exp(igate)[..., None],
        torch.eye(16, dtype=F64).expand(2, 16, 16),
        torch.exp(log_f)[..., None],
    )  # column j of the output is T_raw[:, j]
    ratio = T / raw
    lower = torch.tril(torch.ones(16, 16, dtype=torch.bool))
    row = ratio[..., :, :1].expand_as(ratio)
    torch.testing.assert_close(ratio[..., lower], row[..., lower])
    assert float((ratio[..., :, 0] - ratio[..., :1, 0]).abs().max()) > 1e-3  # rows differ


def test_mlstm_checks_its_gates():
    q = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="`igate` has sequence length L"):
        mlstm(q, q, torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="eps"):
        mlstm(q, q, torch.zeros(4), torch.zeros(4), eps=-1.0)


# ------------------------------------------------------- lightning attention
def minimax_blockwise(q, k, v, slope, block):
    """MiniMax's lightning attention as modeling_minimax computes it, block by block."""
    H, L, d = q.shape
    idx = torch.arange(block, dtype=F64) + 1
    q_decay = torch.exp(-slope * idx[:, None])
    k_decay = torch.exp(-slope * (block - idx[:, None]))
    diag = idx[:, None] - idx[None, :]
    diag = torch.exp(torch.where(slope * diag >= 0, -slope * diag, -torch.inf))  # (H, B, B)
    kv = torch.zeros(H, d, v.shape[-1], dtype=F64)
    out = []
    for s in range(0, L, block):
        e = min(s + block, L)
        n = e - s
        qb, kb, vb = q[:, s:e], k[:, s:e], v[:, s:e]
        intra = ((qb @ kb.mT) * diag[:, :n, :n]) @ vb
        inter = (qb * q_decay[:, :n]) @ kv
        out.append(intra + inter)
        kv = kv * torch.exp(-slope * n) + (kb * k_decay[:, -n:]).mT @ vb
    return torch.cat(out, dim=-2)


def test_lightning_attention_is_weighted_linear_attention_with_decay_exp_minus_slope():
    H, L, d = 2, 19, 4
    q, k, v = randn(H, L, d, seed=1), randn(H, L, d, seed=2), randn(H, L, 3, seed=3)
    slope = torch.tensor([0.3, 0.05], dtype=F64)[:, None, None]  # MiniMax's (H, 1, 1)
    op = weighted_linear_attention(q, k, torch.exp(-slope[:, :, 0]))  # decay (H, 1)
    expected = minimax_blockwise(q, k, v, slope, block=8)  # three blocks, one partial
    torch.testing.assert_close(op.dense() @ v, expected)
    torch.testing.assert_close(expected, linear_attention_ref(q, k, v, torch.exp(-slope)))
    check_structure(op, d)


def test_operators_at_two_steps_say_how_to_read_their_transitions():
    # At L = 2 a (2, 2) state makes diagonal and dense transitions look alike: the
    # operators name theirs, so the spectra need no guess.
    k2 = randn(2, 3, seed=1)
    ops = [
        wkv4(-torch.ones(3, dtype=F64), torch.zeros(3, dtype=F64), k2),
        gated_short_convolution(randn(3, 2, seed=2), randn(2, 3, seed=3), randn(2, 3, seed=4)),
        rg_lru(-torch.ones(2, 3, dtype=F64), torch.ones(2, 3, dtype=F64)),
        mlstm(randn(3, 2, 2, seed=5), randn(3, 2, 2, seed=6), randn(3, 2), randn(3, 2)),
    ]
    for op in ops:
        assert op.transition in ("dense", "diagonal")
        torch.testing.assert_close(op.spectra(), spectra(op.dense())[..., : op.spectra().shape[-1]])
