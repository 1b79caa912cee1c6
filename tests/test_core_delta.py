"""``DeltaTransition``: delta-rule transitions in ``recurrence_spectra`` without forming A_t.

References: the delta rule run step by step on an input (a plain loop), the dense
``(L, N, N)`` transitions through the dense path, and ``spectra`` of the
materialized operator.
"""

import pytest
import torch

from ess_widgets import (
    DeltaTransition,
    recurrence_bytes,
    recurrence_operator,
    recurrence_spectra,
    spectra,
)

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def delta_case(per_channel, L=14, N=4, lead=(), seed=0, beta_max=1.0):
    g = gen(seed)
    k = torch.nn.functional.normalize(torch.randn(*lead, L, N, generator=g, dtype=F64), dim=-1)
    beta = beta_max * torch.rand(*lead, L, generator=g, dtype=F64)
    shape = (*lead, L, N) if per_channel else (*lead, L)
    decay = 0.7 + 0.3 * torch.rand(*shape, generator=g, dtype=F64)
    return DeltaTransition(decay, beta, k)


def delta_rule_loop(decay, beta, k, b, c, u):
    """The delta rule on one input sequence u, one step at a time (one channel).

    x_t = decay_t * x_(t-1) (per key channel), then x_t -= beta_t k_t (k_t . x_t),
    then x_t += b_t u_t; y_t = c_t . x_t.
    """
    L, N = k.shape
    x = torch.zeros(N, dtype=F64)
    y = torch.zeros(L, dtype=F64)
    for t in range(L):
        x = decay[t] * x
        x = x - beta[t] * k[t] * (k[t] @ x)
        x = x + b[t] * u[t]
        y[t] = c[t] @ x
    return y


def assert_rel_close(actual, expected, rtol=1e-10):
    scale = float(expected.abs().amax())
    err = float((actual - expected).abs().amax())
    assert err <= rtol * scale, f"max error {err:.3g} > {rtol:g} * {scale:.3g}"


@pytest.mark.parametrize("per_channel", [False, True], ids=["scalar-decay", "per-channel-decay"])
def test_dense_matrices_follow_the_definition(per_channel):
    A = delta_case(per_channel)
    dense = A.dense()
    assert dense.shape == (14, 4, 4)
    for t in (0, 5, 13):
        d = A.decay[t] if per_channel else A.decay[t].expand(4)
        expected = (torch.eye(4, dtype=F64) - A.beta[t] * torch.outer(A.k[t], A.k[t])) @ torch.diag(
            d
        )
        torch.testing.assert_close(dense[t], expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("per_channel", [False, True], ids=["scalar-decay", "per-channel-decay"])
def test_operator_is_the_delta_rule(per_channel):
    L, N, C = 12, 3, 2
    A = delta_case(per_channel, L=L, N=N, seed=1, beta_max=2.0)  # beta in [0, 2] as in OLMo
    g = gen(2)
    b = torch.randn(C, L, N, generator=g, dtype=F64)
    c = torch.randn(C, L, N, generator=g, dtype=F64)
    u = torch.randn(L, generator=g, dtype=F64)
    T = recurrence_operator(A, b, c)
    assert T.shape == (C, L, L)
    decay = A.decay if per_channel else A.decay[:, None].expand(L, N)
    for ch in range(C):
        assert_rel_close(T[ch] @ u, delta_rule_loop(decay, A.beta, A.k, b[ch], c[ch], u), 1e-12)
    assert_rel_close(T, recurrence_operator(A.dense(), b, c, transition="dense"), 1e-13)


@pytest.mark.parametrize("per_channel", [False, True], ids=["scalar-decay", "per-channel-decay"])
@pytest.mark.parametrize("N", [3, 6])
def test_delta_path_equals_dense_path_and_materialized_operator(per_channel, N):
    L, C = 16, 3  # one key head (k: (L, N)) shared by C value channels
    A = delta_case(per_channel, L=L, N=N, seed=3 + N)
    g = gen(4)
    b = torch.randn(C, L, N, generator=g, dtype=F64)
    c = torch.randn(C, L, N, generator=g, dtype=F64)
    s = recurrence_spectra(A, b, c)
    assert s.shape == (C, L - 1, min(N, L // 2))
    s_dense = recurrence_spectra(A.dense(), b, c, transition="dense")
    assert_rel_close(s, s_dense)
    s_op = spectra(recurrence_operator(A.dense(), b, c, transition="dense"))[..., : s.shape[-1]]
    assert_rel_close(s, s_op, 1e-9)


def test_key_heads_broadcast_against_value_channels():
    H, V, L, N = 2, 3, 10, 4
    A = delta_case(True, L=L, N=N, lead=(H, 1), seed=5)  # per key head, shared by V channels
    g = gen(6)
    b = torch.randn(H, V, L, N, generator=g, dtype=F64)
    c = torch.randn(H, V, L, N, generator=g, dtype=F64)
    s = recurrence_spectra(A, b, c)
    assert s.shape == (H, V, L - 1, N)
    for h in range(H):
        single = DeltaTransition(A.decay[h, 0], A.beta[h, 0], A.k[h, 0])
        for v in range(V):
            expected = recurrence_spectra(single.dense(), b[h, v], c[h, v], transition="dense")
            assert_rel_close(s[h, v], expected)


def test_splits_and_checkpoints_give_the_same_bits(monkeypatch):
    import ess_widgets.core.recurrence as recurrence_module

    A = delta_case(False, L=20, N=3, seed=7)
    b = torch.randn(2, 20, 3, generator=gen(8), dtype=F64)
    c = torch.randn(2, 20, 3, generator=gen(9), dtype=F64)
    full = recurrence_spectra(A, b, c)
    assert torch.equal(recurrence_spectra(A, b, c, splits=[19, 4, 10]), full[:, [18, 3, 9]])
    monkeypatch.setattr(recurrence_module, "_FACTOR_BYTES", 0)
    assert torch.equal(recurrence_spectra(A, b, c), full)


def test_recurrence_never_forms_the_dense_matrices(monkeypatch):
    A = delta_case(True, L=10, N=3, seed=10)
    b = c = torch.ones(10, 3, dtype=F64)
    expected = recurrence_spectra(A.dense(), b, c, transition="dense")

    def refuse(self):
        raise AssertionError("dense() called")

    monkeypatch.setattr(DeltaTransition, "dense", refuse)
    assert_rel_close(recurrence_spectra(A, b, c), expected)
    # and the memory it reports has no L x N x N term
    L, N = 2048, 128
    delta = recurrence_bytes(L, N, 32, transition="delta", device="cpu")
    dense = recurrence_bytes(L, N, 32, transition="dense", device="cpu")
    assert delta < L * N * N * 8 < dense


def test_unstable_delta_rule_raises_naming_a():
    L = 1200
    k = torch.zeros(L, 2, dtype=F64)
    k[:, 0] = 1.0
    A = DeltaTransition(torch.ones(L, dtype=F64), torch.full((L,), 3.0, dtype=F64), k)
    b = c = torch.ones(L, 2, dtype=F64)  # |1 - 3 |k|^2| = 2: 2**1200 overflows
    with pytest.raises(
        ValueError, match=r"`a` makes the recurrence unstable.*\|1 - beta \|k\|\^2\| is 2"
    ):
        recurrence_spectra(A, b, c)


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((5,), (5,), (5,)), r"`k` must have shape \(\.\.\., L, N\)"),
        (((5,), (5, 1), (5, 3)), r"`beta` must have shape \(\.\.\., L\) = \(\.\.\., 5\)"),
        (((4,), (5,), (5, 3)), r"`decay` must have shape \(\.\.\., L\)"),
        (((5, 2), (5,), (5, 3)), r"`decay` must have shape"),
        (((2, 5), (3, 5), (3, 5, 3)), r"leading dimensions of `decay`, `beta`, `k` do not"),
    ],
)
def test_bad_shapes_are_value_errors(shapes, match):
    decay, beta, k = (torch.rand(*s, dtype=F64) for s in shapes)
    with pytest.raises(ValueError, match=match):
        DeltaTransition(decay, beta, k)


def test_mismatch_with_b_and_transition_keyword():
    A = delta_case(False, L=6, N=3)
    with pytest.raises(ValueError, match=r"DeltaTransition with L = 6, N = 3\) must match `b`"):
        recurrence_spectra(A, torch.ones(6, 4), torch.ones(6, 4))
    with pytest.raises(
        ValueError, match=r"`transition` must be None when `a` is a DeltaTransition"
    ):
        recurrence_spectra(A, torch.ones(6, 3), torch.ones(6, 3), transition="dense")
    with pytest.raises(ValueError, match=r"`k` contains 1 NaN"):
        DeltaTransition(torch.ones(3), torch.ones(3), torch.tensor([[0.0], [float("nan")], [1.0]]))


# --- the transition object: its errors, attributes, growth bound and repr -----------------


@pytest.mark.parametrize("name", ["decay", "beta", "k"])
def test_each_input_is_named_in_its_errors(name):
    good = {"decay": torch.ones(4), "beta": torch.ones(4), "k": torch.ones(4, 2)}
    with pytest.raises(ValueError, match=rf"^`{name}` contains \d+ NaN"):
        DeltaTransition(
            **{**good, name: good[name].clone().index_fill_(0, torch.tensor(1), torch.nan)}
        )
    with pytest.raises(TypeError, match=rf"^`{name}` must be a torch.Tensor or numpy array"):
        DeltaTransition(**{**good, name: "0.5"})


def test_beta_needs_one_dimension_less_than_k_even_when_its_length_fits():
    with pytest.raises(ValueError, match=r"`beta` must have shape \(\.\.\., L\) = \(\.\.\., 5\)"):
        DeltaTransition(torch.ones(5), torch.ones(1, 5), torch.ones(5, 3))


def test_attributes_and_broadcast_batch_shape():
    L, N = 6, 3
    A = DeltaTransition(torch.ones(2, 1, L), torch.ones(1, 4, L), torch.ones(1, 1, L, N))
    assert (A.L, A.N, A.per_channel, A.batch_shape) == (L, N, False, (2, 4))
    assert A.dense().shape == (2, 4, L, N, N)
    B = DeltaTransition(torch.ones(3, L, N), torch.ones(1, L), torch.ones(1, L, N))
    assert (B.per_channel, B.batch_shape) == (True, (3,))
    assert repr(A) == "DeltaTransition(L=6, N=3, batch_shape=(2, 4), decay scalar per step)"
    assert repr(B) == "DeltaTransition(L=6, N=3, batch_shape=(3,), decay per key channel)"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dense_keeps_the_inputs_dtype(dtype):
    A = DeltaTransition(
        torch.ones(4, dtype=dtype), torch.ones(4, dtype=dtype), torch.ones(4, 2, dtype=dtype)
    )
    assert A.dense().dtype == dtype


def test_growth_bounds_every_spectral_norm_and_is_reached_for_a_scalar_decay():
    L, N = 7, 3
    g = gen(5)
    k = 2.0 * torch.nn.functional.normalize(torch.randn(2, L, N, generator=g, dtype=F64), dim=-1)
    # |k|^2 = 4: the reflection 1 - beta |k|^2 ranges over [-3, 1) for beta in (0, 1].
    for beta, decay in [
        (torch.full((2, L), 1.0, dtype=F64), torch.full((2, L), 0.5, dtype=F64)),  # 3 * 0.5
        (torch.full((2, L), 0.1, dtype=F64), torch.full((2, L), 0.5, dtype=F64)),  # max(1, .6)
        (torch.full((2, L), 0.125, dtype=F64), torch.full((2, L), 0.5, dtype=F64)),  # 0.5
    ]:
        A = DeltaTransition(decay, beta, k)
        norms = torch.linalg.matrix_norm(A.dense(), ord=2)
        # with N >= 2 the bound is attained: |decay| * max(1, |1 - beta |k|^2|)
        torch.testing.assert_close(torch.tensor(A.growth(), dtype=F64), norms.amax())
    A = DeltaTransition(
        torch.rand(2, L, N, generator=g, dtype=F64), 0.3 * torch.ones(2, L, dtype=F64), k
    )
    assert float(torch.linalg.matrix_norm(A.dense(), ord=2).amax()) <= A.growth() + 1e-12
