"""The gated delta rule (scalar decay: Gated DeltaNet; per-channel decay: KDA).

``op.dense() @ v`` against the state-matrix loop ``gated_delta_rule_ref`` (the model's
own recurrent form); the recurrence ``(A, b, c)`` against the same dense operator by
``recurrence_operator`` of the materialized transitions and by a hand-built
``A_t = (I - beta k k^T) diag(alpha)``; structured spectra against the SVD; ESS equal
to ``min(bound, d_k)`` for generic inputs. float64, small L.
"""

from __future__ import annotations

import pytest
import torch

from ess_widgets.core import (
    DeltaTransition,
    ess_bound,
    recurrence_operator,
    spectra,
    tolerance_ess,
)
from ess_widgets.operators import gated_delta_rule, gated_delta_rule_ref

F64 = torch.float64


def unit(g, *shape):
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g, dtype=F64), dim=-1)


def inputs(batch, L, d_k, d_v, per_channel, beta_max=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = unit(g, *batch, L, d_k), unit(g, *batch, L, d_k)
    v = torch.randn(*batch, L, d_v, generator=g, dtype=F64)
    beta = beta_max * torch.rand(*batch, L, generator=g, dtype=F64)
    decay_shape = (*batch, L, d_k) if per_channel else (*batch, L)
    decay = 0.6 + 0.4 * torch.rand(*decay_shape, generator=g, dtype=F64)
    return q, k, v, beta, decay


def transitions(k, beta, decay):
    """``A_t = (I - beta_t k_t k_t^T) diag(decay_t)`` written out, ``(..., L, N, N)``."""
    N = k.shape[-1]
    alpha = decay if decay.ndim == k.ndim else decay[..., None].expand(k.shape)
    outer = k[..., :, None] * k[..., None, :]
    return (torch.eye(N, dtype=F64) - beta[..., None, None] * outer) @ torch.diag_embed(alpha)


CASES = [
    pytest.param((), 10, 3, 2, False, 1.0, id="GDN-L10-dk3"),
    pytest.param((3,), 16, 4, 5, False, 2.0, id="GDN-H3-L16-dk4-beta2"),
    pytest.param((), 10, 3, 2, True, 1.0, id="KDA-L10-dk3"),
    pytest.param((2, 2), 12, 4, 3, True, 1.0, id="KDA-B2-H2-L12-dk4"),
]


@pytest.mark.parametrize(("batch", "L", "d_k", "d_v", "per_channel", "beta_max"), CASES)
def test_dense_times_v_is_the_state_matrix_loop(batch, L, d_k, d_v, per_channel, beta_max):
    q, k, v, beta, decay = inputs(batch, L, d_k, d_v, per_channel, beta_max)
    op = gated_delta_rule(q, k, beta, decay)
    assert op.kind == ("kimi_delta_attention" if per_channel else "gated_delta_rule")
    T = op.dense()
    assert T.shape == (*batch, L, L) and T.dtype == F64
    assert torch.equal(T, torch.tril(T))
    expected = gated_delta_rule_ref(q, k, v, beta, decay)
    # every value channel of a head goes through the same T
    torch.testing.assert_close(T @ v, expected, rtol=1e-12, atol=1e-12)
    assert float(expected.abs().max()) > 0.1


@pytest.mark.parametrize(("batch", "L", "d_k", "d_v", "per_channel", "beta_max"), CASES)
def test_recurrence_is_the_written_out_transition(batch, L, d_k, d_v, per_channel, beta_max):
    q, k, _, beta, decay = inputs(batch, L, d_k, d_v, per_channel, beta_max, seed=1)
    op = gated_delta_rule(q, k, beta, decay)
    a, b, c = op.recurrence
    assert isinstance(a, DeltaTransition)  # applied in rank-one form, never (L, N, N)
    assert a.per_channel == per_channel
    A = transitions(k, beta, decay)
    torch.testing.assert_close(a.dense(), A, rtol=0, atol=1e-15)
    torch.testing.assert_close(b, beta[..., None] * k)
    torch.testing.assert_close(c, q / d_k**0.5)
    T = recurrence_operator(A, b, c, transition="dense")
    torch.testing.assert_close(T, op.dense(), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(recurrence_operator(a, b, c), T, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(("batch", "L", "d_k", "d_v", "per_channel", "beta_max"), CASES)
def test_structured_spectra_equal_the_svd_and_ess_is_d_k(batch, L, d_k, d_v, per_channel, beta_max):
    q, k, _, beta, decay = inputs(batch, L, d_k, d_v, per_channel, beta_max, seed=2)
    op = gated_delta_rule(q, k, beta, decay)
    s = op.spectra()
    dense = spectra(op.dense())
    sigma1 = float(dense[..., 0].max())
    torch.testing.assert_close(s, dense[..., :d_k], rtol=1e-8, atol=1e-11 * sigma1)
    assert float(dense[..., d_k:].abs().max()) <= 1e-11 * sigma1  # rank <= d_k
    assert torch.equal(op.tss, torch.full((L - 1,), d_k))
    ess = tolerance_ess(s, 1e-8, relative=True)
    assert torch.equal(ess, ess_bound(L).clamp(max=d_k).expand_as(ess))


def test_scale_and_a_hand_computed_entry():
    # d_k = 1, k = q = 1: A_t = (1 - beta_t) decay_t, b_t = beta_t, c_t = scale.
    L = 4
    one = torch.ones(L, 1, dtype=F64)
    beta = torch.tensor([0.5, 0.25, 1.5, 0.5], dtype=F64)
    decay = torch.tensor([1.0, 0.5, 0.8, 0.9], dtype=F64)
    T = gated_delta_rule(one, one, beta, decay, scale=2.0).dense()
    # T[3, 0] = scale * A_3 A_2 A_1 b_0
    expected = 2.0 * (0.5 * 0.9) * (-0.5 * 0.8) * (0.75 * 0.5) * 0.5
    assert float(T[3, 0]) == pytest.approx(expected, rel=1e-14)
    assert float(T[2, 2]) == pytest.approx(2.0 * 1.5, rel=1e-14)


def test_zero_decay_resets_the_state():
    q, k, _, beta, decay = inputs((), 8, 3, 2, False)
    decay = decay.clone()
    decay[4] = 0.0  # nothing before step 4 survives it
    T = gated_delta_rule(q, k, beta, decay).dense()
    assert float(T[4:, :4].abs().max()) == 0.0
    assert float(T[4:, 4:].abs().max()) > 0.0


BAD = [
    pytest.param(dict(beta=torch.full((6,), 2.5)), r"`beta` must lie in \[0, 2\]", id="beta>2"),
    pytest.param(dict(beta=-torch.ones(6)), r"`beta` must lie in \[0, 2\]", id="beta<0"),
    pytest.param(dict(decay=torch.full((6,), -0.5)), r"`decay`.*exp\(g\)", id="log-decay"),
    pytest.param(dict(decay=torch.ones(6, 2)), r"`decay` has key dimension", id="decay-dk"),
    pytest.param(dict(decay=torch.ones(6, 3, 1)), r"`decay` must have shape", id="decay-ndim"),
    pytest.param(dict(beta=torch.ones(5)), r"`beta` has sequence length", id="beta-L"),
    pytest.param(dict(k=torch.ones(6, 2)), r"`k` has key dimension", id="k-dk"),
    pytest.param(dict(scale=0.0), r"`scale` must be a number > 0", id="scale0"),
]


@pytest.mark.parametrize(("change", "match"), BAD)
def test_bad_input_names_the_argument(change, match):
    args = dict(q=torch.ones(6, 3), k=torch.ones(6, 3), beta=torch.ones(6), decay=torch.ones(6))
    args.update(change)
    with pytest.raises(ValueError, match=match):
        gated_delta_rule(**args)
