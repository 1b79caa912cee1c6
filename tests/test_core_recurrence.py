"""``recurrence_bytes`` against hand-computed memory budgets, and its argument checks.

The budget (see the function's docstring), for ``C`` channels in chunks of ``c``
(at most ``ceil(C / threads)`` on the CPU), ``S`` distinct splits, ``K = min(N, L // 2)``
and ``b`` bytes per number: the result, twice (the per-chunk parts and their
concatenation), ``2 C S K b``; plus for each chunk in flight (one per thread on the
CPU, one on CUDA) ``c (a + 2 L N + (F + 8) N^2 + S K) b`` with ``a`` the transition's
numbers per channel (``L N`` diagonal, ``L N^2`` dense, ``L (2N + 1)`` delta) and ``F``
the forward factors kept (``S``, or checkpoints plus one segment).
"""

import importlib
import re

import pytest
import torch

from ess_widgets.core import recurrence_bytes, recurrence_operator, recurrence_spectra, spectra

recurrence_module = importlib.import_module("ess_widgets.core.recurrence")


# L = 8, N = 2, C = 3, float64 (b = 8), two threads: c = ceil(3 / 2) = 2, two chunks in
# flight, S = 7, K = 2, result 2 * 3 * 7 * 2 * 8 = 672 bytes.
# diagonal: a = 16, per channel 16 + 32 + (7 + 8) * 4 + 7 * 2 = 122: 672 + 2 * 2 * 122 * 8.
# dense: a = 32, 138 per channel; delta: a = 8 * 5 = 40, 146 per channel.
@pytest.mark.parametrize(
    ("transition", "expected"),
    [("diagonal", 672 + 4 * 122 * 8), ("dense", 672 + 4 * 138 * 8), ("delta", 672 + 4 * 146 * 8)],
)
def test_budget_by_hand_per_transition(two_threads, transition, expected):
    assert recurrence_bytes(8, 2, 3, transition=transition, device="cpu") == expected


def test_budget_by_hand_defaults_splits_dtype_and_checkpoints(two_threads, monkeypatch):
    # The defaults: diagonal, float64, all splits.
    assert recurrence_bytes(8, 2, 3, device="cpu") == 672 + 4 * 122 * 8
    # Two distinct splits: result 2 * 3 * 2 * 2 * 8 = 192, per channel 16 + 32 + 10 * 4 + 4.
    assert recurrence_bytes(8, 2, 3, splits=[4, 4, 2], device="cpu") == 192 + 4 * 92 * 8
    # float32: b = 4, the same counts.
    assert recurrence_bytes(8, 2, 3, dtype=torch.float32, device="cpu") == 336 + 4 * 122 * 4
    # One channel: one chunk of one channel in flight.
    assert recurrence_bytes(8, 2, 1, device="cpu") == 224 + 122 * 8
    # Nothing kept in full: checkpoints every isqrt(7) + 1 = 3 steps, ceil(8 / 3) = 3 of
    # them plus one segment of 3, F = 6: per channel 16 + 32 + 14 * 4 + 14 = 118.
    monkeypatch.setattr(recurrence_module, "_FACTOR_BYTES", 0)
    assert recurrence_bytes(8, 2, 3, device="cpu") == 672 + 4 * 118 * 8
    # L = 17: K = 2, S = 16, checkpoints every isqrt(16) + 1 = 5: ceil(17 / 5) + 5 = 9.
    # result 2 * 1 * 16 * 2 * 8 = 512; per channel 34 + 68 + 17 * 4 + 32 = 202.
    assert recurrence_bytes(17, 2, 1, device="cpu") == 512 + 202 * 8


def test_budget_counts_the_channels_there_are_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    # One chunk in flight, holding the 3 channels (not the chunk size's 500,000).
    assert recurrence_bytes(8, 2, 3, device="cuda") == 672 + 3 * 122 * 8


def test_budget_of_no_channels_is_nothing():
    assert recurrence_bytes(8, 2, 0, device="cpu") == 0


def test_budget_grows_with_what_is_kept(two_threads):
    small = recurrence_bytes(64, 8, 16, device="cpu")
    assert recurrence_bytes(64, 8, 32, device="cpu") > small
    assert recurrence_bytes(64, 8, 16, splits=[32], device="cpu") < small
    assert recurrence_bytes(64, 16, 16, device="cpu") > small


@pytest.mark.parametrize("name", ["L", "N", "channels"])
@pytest.mark.parametrize("bad", [-1, 2.0, True, "8", None])
def test_sizes_must_be_ints_at_least_zero_naming_the_argument(name, bad):
    sizes = {"L": 8, "N": 2, "channels": 3}
    sizes[name] = bad
    with pytest.raises(ValueError, match=rf"^`{name}` must be an int >= 0, got {bad!r}\.$"):
        recurrence_bytes(sizes["L"], sizes["N"], sizes["channels"], device="cpu")


def test_sizes_at_zero_and_one():
    assert recurrence_bytes(2, 0, 1, device="cpu") >= 0  # N = 0: nothing to keep
    with pytest.raises(ValueError, match=r"L >= 2 .* got L = 1"):
        recurrence_bytes(1, 2, 3, device="cpu")
    with pytest.raises(ValueError, match=r"L >= 2 .* got L = 0"):
        recurrence_bytes(0, 2, 3, device="cpu")


def test_transition_must_be_one_of_the_three():
    for bad in ("Diagonal", "scalar", None):
        with pytest.raises(ValueError, match=r"`transition` must be one of .*'delta'.*got"):
            recurrence_bytes(8, 2, 3, transition=bad, device="cpu")


@pytest.mark.parametrize("transition", ["diagonal", "dense"])
def test_a_recurrence_without_state_is_the_zero_operator(transition):
    # N = 0 used to divide by zero when sizing the chunks.
    L = 5
    a = torch.ones(L, 0) if transition == "diagonal" else torch.ones(L, 0, 0)
    b = c = torch.ones(L, 0)
    s = recurrence_spectra(a, b, c, transition=transition)
    assert s.shape == (L - 1, 0)
    T = recurrence_operator(a, b, c, transition=transition)
    assert torch.equal(T, torch.zeros(L, L, dtype=torch.float64))
    assert (spectra(T) == 0).all()


# --- the overflow error: what grows, by how much -------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_unstable_dense_a_is_named_with_its_spectral_norm(dtype):
    L = 1100
    # ||diag(2, 0.5)||_2 = 2 (its Frobenius norm would be 2.062); 2**1100 overflows.
    a = torch.diag(torch.tensor([2.0, 0.5])).to(dtype).expand(L, 2, 2)
    b = c = torch.ones(L, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"`a` makes .*spectral norm \|\|A_t\|\|_2 is 2;"):
        recurrence_spectra(a, b, c, transition="dense")


def test_overflow_from_huge_b_and_c_with_a_at_exactly_one_blames_b_and_c():
    L = 6
    a = torch.ones(L, 1, dtype=torch.float64)  # |a| = 1: stable (a running sum)
    b = c = torch.full((L, 1), 1e200, dtype=torch.float64)
    with pytest.raises(
        ValueError,
        match=r"overflow torch\.float64 although `a` is stable \(the largest \|a\| is 1\)",
    ):
        recurrence_spectra(a, b, c)


def test_budget_by_hand_more_state_than_half_the_length(two_threads):
    # L = 5, N = 4: K = min(4, 5 // 2) = 2, S = 4; result 2 * 1 * 4 * 2 * 8 = 128;
    # per channel 20 + 40 + (4 + 8) * 16 + 4 * 2 = 260.
    assert recurrence_bytes(5, 4, 1, device="cpu") == 128 + 260 * 8


def test_budget_by_hand_at_the_checkpoint_threshold(two_threads, monkeypatch):
    # L = 8, N = 2, 3 channels: the kept factors of a chunk are 2 * 7 * 4 * 8 = 448 bytes.
    monkeypatch.setattr(recurrence_module, "_FACTOR_BYTES", 448)  # they fit: all kept
    assert recurrence_bytes(8, 2, 3, device="cpu") == 672 + 4 * 122 * 8
    monkeypatch.setattr(recurrence_module, "_FACTOR_BYTES", 447)  # checkpoints, F = 6
    assert recurrence_bytes(8, 2, 3, device="cpu") == 672 + 4 * 118 * 8
    monkeypatch.setattr(recurrence_module, "_FACTOR_BYTES", 0)
    # L = 4, N = 2: checkpoints every isqrt(3) + 1 = 2 steps, F = 2 + 2 = 4; result 96,
    # per channel 8 + 16 + 12 * 4 + 6 = 78.
    assert recurrence_bytes(4, 2, 1, device="cpu") == 96 + 78 * 8
    # L = 2, N = 1: every isqrt(1) + 1 = 2 steps, F = 1 + 2 = 3; result 16, per channel
    # 2 + 4 + 11 + 1 = 18.
    assert recurrence_bytes(2, 1, 1, device="cpu") == 16 + 18 * 8


def test_budget_is_an_int_and_counts_one_chunk_in_flight_on_cuda(two_threads, monkeypatch):
    assert isinstance(recurrence_bytes(8, 2, 3, device="cpu"), int)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    # device="cpu" is honoured when CUDA is there.
    assert recurrence_bytes(8, 2, 3, device="cpu") == 672 + 4 * 122 * 8
    # L = 2048, N = 64: a chunk is 2 channels (256 MiB / (2 L N^2 8 bytes)); with 3
    # channels, 2 chunks, but CUDA works on one at a time: going from 2 to 3 channels
    # adds only the third channel's share of the result, 2 * 2047 * 64 * 8 bytes.
    two, three = (recurrence_bytes(2048, 64, C, device="cuda") for C in (2, 3))
    assert three - two == 2 * 2047 * 64 * 8
    # By hand for 2 channels: result 2 * 2 * 2047 * 64 * 8 = 4,192,256; the chunk's
    # factors (2 * 2047 * 64^2 * 8 = 134,152,192 bytes) fit under 128 MiB, so F = 2047;
    # per channel 131,072 + 262,144 + 2,055 * 4,096 + 2,047 * 64 = 8,941,504 numbers.
    assert two == 4_192_256 + 2 * 8_941_504 * 8
    assert isinstance(two, int)


# --- recurrence_operator: where it computes, in which dtype ------------------------------------


def leaky(L, channels=2):
    a = torch.full((channels, L, 1), 0.5, dtype=torch.float64)
    b = c = torch.ones(L, 1, dtype=torch.float64)
    return a, b, c


def test_operator_stays_on_the_inputs_device_by_default(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # not used by default
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    T = recurrence_operator(*leaky(4))
    assert T.device.type == "cpu"
    # T[t, j] = 0.5 ** (t - j) below the diagonal: a plain double loop
    expected = torch.tensor(
        [[0.5 ** (t - j) if j <= t else 0.0 for j in range(4)] for t in range(4)],
        dtype=torch.float64,
    )
    assert torch.equal(T, expected.expand(2, 4, 4))


@pytest.mark.parametrize("channels", [2, 0])
def test_operator_is_computed_where_and_in_the_dtype_asked(channels):
    T = recurrence_operator(*leaky(4, channels), device="meta")  # shapes only, no numbers
    assert (T.device.type, T.shape, T.dtype) == ("meta", (channels, 4, 4), torch.float64)
    T32 = recurrence_operator(*leaky(4, channels), dtype=torch.float32)
    assert (T32.device.type, T32.dtype) == ("cpu", torch.float32)
    assert recurrence_operator(*leaky(4, channels)).dtype == torch.float64


def test_operator_too_large_is_refused_naming_the_function():
    L = 10**6
    b = c = torch.ones(L, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^recurrence_operator: a dense operator of shape"):
        recurrence_operator(torch.full((L, 1), 0.5, dtype=torch.float64), b, c)


# --- chunking and checkpoints: counted, not timed ----------------------------------------------


def test_one_channel_per_chunk_when_one_channels_factors_exceed_the_chunk_budget(two_threads):
    cpu = torch.device("cpu")
    # 2 L N^2 8 bytes per channel: 4 GiB at L = 16384, N = 128 (over 256 MiB): chunks of 1.
    assert recurrence_module._channels_per_chunk(16384, 128, 4, cpu, torch.float64) == 1
    # 2 * 64 * 16 * 8 = 16 KiB per channel: all channels fit, one chunk per thread.
    assert recurrence_module._channels_per_chunk(64, 4, 4, cpu, torch.float64) == 2
    assert recurrence_module._channels_per_chunk(64, 4, 5, cpu, torch.float64) == 3
    # On CUDA no cap by the channels: 256 MiB / (2 * 2048 * 32^2 * 8 bytes = 32 MiB) = 8.
    cuda = torch.device("cuda")
    assert recurrence_module._channels_per_chunk(2048, 32, 100, cuda, torch.float64) == 8
    assert recurrence_module._channels_per_chunk(2048, 32, 100, cuda, torch.float32) == 16


def count_qr(monkeypatch, transition="diagonal", L=27, **kwargs):
    calls = []
    qr = torch.linalg.qr

    def counting(*args, **kw):
        calls.append(1)
        return qr(*args, **kw)

    monkeypatch.setattr(torch.linalg, "qr", counting)
    g = torch.Generator().manual_seed(8)
    a = 0.5 + 0.5 * torch.rand(1, L, 3, generator=g, dtype=torch.float64)
    b = torch.randn(1, L, 3, generator=g, dtype=torch.float64)
    c = torch.randn(1, L, 3, generator=g, dtype=torch.float64)
    s = recurrence_spectra(a, b, c, transition=transition, device="cpu", **kwargs)
    monkeypatch.setattr(torch.linalg, "qr", qr)
    return len(calls), s


def test_checkpointed_sweep_recomputes_each_segment_once(monkeypatch):
    # One channel, L = 27, every split: 26 forward and 26 backward QR steps.
    plain, s_plain = count_qr(monkeypatch)
    assert plain == 52
    # The 26 factors take 26 * 3 * 3 * 8 = 1872 bytes: at that budget they are all kept.
    monkeypatch.setattr(recurrence_module, "_FACTOR_BYTES", 1872)
    assert count_qr(monkeypatch)[0] == 52
    # One byte less: checkpoints every isqrt(26) + 1 = 6 steps (at 6, 12, 18, 24); the
    # backward sweep recomputes the segments from 24 (2 steps, to 26) and from 18, 12, 6
    # and 0 (5 steps each): 22 more QR steps, and the same bits.
    monkeypatch.setattr(recurrence_module, "_FACTOR_BYTES", 1871)
    checkpointed, s_checkpointed = count_qr(monkeypatch)
    assert checkpointed == 52 + 22
    assert torch.equal(s_checkpointed, s_plain)


def test_empty_batch_result_has_the_working_dtype():
    a = torch.zeros(0, 6, 3)
    b = c = torch.ones(6, 3)
    assert recurrence_spectra(a, b, c).dtype == torch.float64
    assert recurrence_spectra(a, b, c, dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize("N", [3, 4])
def test_overflow_in_one_chunk_of_several_is_the_unstable_error(two_threads, N):
    # Two channels, two chunks: the second overflows float32 in its forward sweep
    # (1e10 ** 4 > 3e38) and gives up early; the first is fine. L = 6: K = 3.
    L = 6
    a = torch.stack([torch.full((L, N), 0.5), torch.full((L, N), 1e10)]).double()
    b = c = torch.ones(L, N, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"`a` makes the recurrence unstable.*largest \|a\| is 1e\+10"
    ):
        recurrence_spectra(a, b, c, dtype=torch.float32)


# --- argument names and batch errors -----------------------------------------------------------


def test_a_is_named_in_its_errors():
    b = c = torch.ones(4, 2)
    with pytest.raises(ValueError, match=r"^`a` contains 1 NaN"):
        recurrence_spectra(torch.tensor([[0.5, 0.5]] * 3 + [[float("nan"), 0.5]]), b, c)
    with pytest.raises(TypeError, match=r"^`a` must be a torch.Tensor or numpy array"):
        recurrence_spectra("0.5", b, c)


@pytest.mark.parametrize("transition", [None, "diagonal"])
def test_leading_dimensions_that_do_not_broadcast_are_listed(transition):
    a, b, c = torch.full((2, 5, 3), 0.5), torch.ones(3, 5, 3), torch.ones(5, 3)
    with pytest.raises(
        ValueError,
        match=r"^The leading \(channel/batch\) dimensions of `a`, `b`, `c` do not broadcast: "
        r"\(2,\), \(3,\), \(\)\. ",
    ):
        recurrence_spectra(a, b, c, transition=transition)


def test_transition_is_inferred_from_all_three_leading_shapes():
    # L = N = 2: a of shape (2, 2, 2) reads as diagonal (L, N) with 2 channels or as one
    # dense (L, N, N). c's 3 channels rule out the diagonal reading: dense, no ambiguity.
    g = torch.Generator().manual_seed(2)
    a = 0.5 * torch.rand(2, 2, 2, generator=g, dtype=torch.float64)
    b = torch.randn(2, 2, generator=g, dtype=torch.float64)
    c = torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
    assert torch.equal(recurrence_spectra(a, b, c), recurrence_spectra(a, b, c, transition="dense"))


def test_a_without_leading_dimensions_and_clashing_b_and_c_is_a_batch_error():
    # a itself fits (diagonal (L, N), or dense (2, L, N, N)); b's and c's channels clash.
    b, c = torch.ones(2, 5, 3), torch.ones(3, 5, 3)
    for a, leads in (
        (torch.full((5, 3), 0.5), "(), (2,), (3,)"),
        (torch.full((4, 5, 3, 3), 0.1), "(4,), (2,), (3,)"),
    ):
        with pytest.raises(
            ValueError, match=rf"^The leading .* do not broadcast: {re.escape(leads)}\. "
        ):
            recurrence_spectra(a, b, c)


def test_singular_values_past_the_rank_are_exactly_zero():
    g = torch.Generator().manual_seed(12)
    L, N = 9, 8
    a = 0.5 + 0.5 * torch.rand(2, L, N, generator=g, dtype=torch.float64)
    b = torch.randn(2, L, N, generator=g, dtype=torch.float64)
    c = torch.randn(2, L, N, generator=g, dtype=torch.float64)
    s = recurrence_spectra(a, b, c)
    for i in range(1, L):
        rank = min(i, L - i)  # the block T[i:, :i] is (L - i) x i
        assert (s[:, i - 1, rank:] == 0).all()
        assert (s[:, i - 1, :rank] > 0).all()


@pytest.mark.parametrize("transition", ["diagonal", "dense"])
def test_chunks_of_one_channel_give_each_channels_own_spectra(monkeypatch, transition):
    g = torch.Generator().manual_seed(13)
    L, N, C = 10, 3, 3
    if transition == "diagonal":
        a = 0.5 + 0.5 * torch.rand(C, L, N, generator=g, dtype=torch.float64)
    else:
        a = 0.5 * torch.randn(C, L, N, N, generator=g, dtype=torch.float64) / N**0.5
    b = torch.randn(C, L, N, generator=g, dtype=torch.float64)
    c = torch.randn(L, N, generator=g, dtype=torch.float64)  # shared by the channels
    monkeypatch.setattr(recurrence_module, "_CHUNK_BYTES", 1)  # one channel per chunk
    chunked = recurrence_spectra(a, b, c, transition=transition)
    for k in range(C):
        alone = recurrence_spectra(a[k], b[k], c, transition=transition)
        torch.testing.assert_close(chunked[k], alone, rtol=1e-12, atol=1e-12 * float(alone.amax()))


def test_checkpoint_segments_are_isqrt_of_L_minus_1_plus_1(monkeypatch):
    # L = 24: 23 forward and 23 backward steps; checkpoints every isqrt(23) + 1 = 5 steps
    # (at 5, 10, 15, 20); segments recomputed from 20 (3 steps, to 23), 15, 10, 5, 0
    # (4 steps each): 19 more.
    monkeypatch.setattr(recurrence_module, "_FACTOR_BYTES", 0)
    assert count_qr(monkeypatch, L=24)[0] == 46 + 19
    # L = 10: every isqrt(9) + 1 = 4 steps (at 4, 8); segments from 8 (1 step), 4 and 0
    # (3 steps each).
    assert count_qr(monkeypatch, L=10)[0] == 18 + 7


@pytest.mark.parametrize("name", ["b", "c"])
def test_b_and_c_are_named_in_their_errors(name):
    good = {"a": torch.full((4, 2), 0.5), "b": torch.ones(4, 2), "c": torch.ones(4, 2)}
    bad = good[name].clone()
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match=rf"^`{name}` contains 0 NaN and 1 Inf"):
        recurrence_spectra(**{**good, name: bad})
    with pytest.raises(TypeError, match=rf"^`{name}` must be a torch.Tensor or numpy array"):
        recurrence_spectra(**{**good, name: "x"})


def test_transition_is_inferred_from_b_too():
    # As with c above: b's 3 channels rule out the diagonal reading of a (2, 2, 2).
    g = torch.Generator().manual_seed(3)
    a = 0.5 * torch.rand(2, 2, 2, generator=g, dtype=torch.float64)
    b = torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
    c = torch.randn(2, 2, generator=g, dtype=torch.float64)
    assert torch.equal(recurrence_spectra(a, b, c), recurrence_spectra(a, b, c, transition="dense"))


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "c_shape", "leads"),
    [
        ((5, 3, 3), (2, 5, 3), (3, 5, 3), "(), (2,), (3,)"),  # dense by its (L, N, N) end
        ((4, 5, 3, 3), (1, 2, 5, 3), (5, 3), "(4,), (1, 2), ()"),
    ],
)
def test_a_dense_a_whose_channels_clash_is_a_batch_error(a_shape, b_shape, c_shape, leads):
    a, b, c = torch.full(a_shape, 0.1), torch.ones(b_shape), torch.ones(c_shape)
    with pytest.raises(
        ValueError, match=rf"^The leading .* do not broadcast: {re.escape(leads)}\. "
    ):
        recurrence_spectra(a, b, c)
