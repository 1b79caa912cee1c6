"""The GPU side of the Gram path, run without a GPU: the cost model's fit and cache, the
calibration problems it times, and when CuPy's solver is used (a stand-in module).
"""

import importlib
import sys
import time
import types

import pytest
import torch

import ess_widgets.core._batched as batched

# The module (ess_widgets.core.spectra the attribute is the function of that name).
spectra_module = importlib.import_module("ess_widgets.core.spectra")
F64 = torch.float64


def test_work_is_heads_times_L_to_the_fourth():
    assert batched.work_of(3, 10) == 30_000.0
    assert batched.work_of(1, 2) == 16.0
    assert isinstance(batched.work_of(2, 5), float)


def test_fit_times_both_devices_on_both_problems_and_solves_the_line():
    (h1, l1), (h2, l2) = batched._CALIBRATION
    w1, w2 = batched.work_of(h1, l1), batched.work_of(h2, l2)
    # CPU: 2e-9 s per unit of work at the small size, 3e-9 at the large one (the
    # slower rate counts); GPU: 0.25 s overhead, then 1e-10 s per unit.
    times = {
        ("cpu", h1, l1): 2e-9 * w1,
        ("cpu", h2, l2): 3e-9 * w2,
        ("cuda", h1, l1): 0.25 + 1e-10 * w1,
        ("cuda", h2, l2): 0.25 + 1e-10 * w2,
    }
    asked = []

    def measure(device, heads, L):
        asked.append((device, heads, L))
        return times[(device, heads, L)]

    alpha, beta, gamma = batched._fit(measure)
    assert sorted(asked) == sorted(times)
    assert gamma == pytest.approx(3e-9, rel=1e-12)
    assert beta == pytest.approx(1e-10, rel=1e-9)
    assert alpha == pytest.approx(0.25, rel=1e-9)


def test_fit_never_gives_negative_overhead_or_throughput():
    def noisy(device, heads, L):  # the GPU timed faster on the larger problem
        if device == "cpu":
            return 1.0
        return 0.5 if L == batched._CALIBRATION[0][1] else 0.25

    alpha, beta, gamma = batched._fit(noisy)
    assert beta == 0.0
    assert alpha == 0.5
    assert gamma > 0

    def free_overhead(device, heads, L):  # a line through the origin, cut below zero
        w = batched.work_of(heads, L)
        return w * 1e-9 if device == "cpu" else w * 2e-10 - 1e-3

    alpha, beta, _ = batched._fit(free_overhead)
    assert alpha == 0.0
    assert beta == pytest.approx(2e-10, rel=1e-9)


def test_pick_device_measures_once_per_process(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(batched, "_calibrated", {})
    asked = []

    def measure(device, heads, L):  # GPU: 0.1 s overhead, 10x the CPU's throughput
        asked.append(device)
        w = batched.work_of(heads, L)
        return 1e-9 * w if device == "cpu" else 0.1 + 1e-10 * w

    monkeypatch.setattr(batched, "_measure", measure)
    # break-even: 0.1 = 0.9e-9 w, w = 1.1e8 (one 103 x 103 matrix, or 4 x 73^4)
    assert batched.pick_device(1, 64) == torch.device("cpu")
    assert len(asked) == 4
    assert batched.pick_device(4, 512) == torch.device("cuda")
    assert batched.pick_device(1, 102) == torch.device("cpu")
    assert batched.pick_device(1, 104) == torch.device("cuda")
    assert len(asked) == 4  # cached: no second calibration


def test_pick_device_without_cuda_or_measure_is_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def fail(*args):
        raise AssertionError("nothing is timed without CUDA")

    monkeypatch.setattr(batched, "_measure", fail)
    assert batched.pick_device(1000, 4096) == torch.device("cpu")


def test_calibration_times_the_gram_path_on_a_lower_triangular_problem(monkeypatch):
    calls = []

    def fake_spectra(T, *, method, device):
        calls.append((tuple(T.shape), T.dtype, bool((T.triu(1) == 0).all()), method, device))
        return torch.zeros(1)

    monkeypatch.setattr(spectra_module, "spectra", fake_spectra)
    seconds = batched._measure("cpu", 3, 40)
    assert isinstance(seconds, float) and seconds >= 0
    # a warm-up on one 16 x 16 head, then the problem itself, both on the device asked
    assert calls == [
        ((1, 16, 16), F64, True, "gram", "cpu"),
        ((3, 40, 40), F64, True, "gram", "cpu"),
    ]


def test_calibration_on_cuda_waits_for_the_gpu_around_the_timed_call(monkeypatch):
    events = []
    monkeypatch.setattr(
        spectra_module,
        "spectra",
        lambda T, *, method, device: events.append(("spectra", T.shape[0])),
    )
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: events.append(("synchronize",)))
    before = time.perf_counter()
    seconds = batched._measure("cuda", 3, 20)
    elapsed = time.perf_counter() - before
    # warm-up, wait, (clock starts) the problem, wait (clock stops)
    assert events == [("spectra", 1), ("synchronize",), ("spectra", 3), ("synchronize",)]
    assert 0 <= seconds <= elapsed  # a duration within the call, not a clock reading
    events.clear()
    batched._measure("cpu", 3, 20)
    assert events == [("spectra", 1), ("spectra", 3)]  # nothing to wait for on the CPU


def test_calibration_problem_is_random_and_the_same_each_time(monkeypatch):
    seen = []
    monkeypatch.setattr(
        spectra_module, "spectra", lambda T, *, method, device: seen.append(T.clone())
    )
    batched._measure("cpu", 2, 20)
    batched._measure("cpu", 2, 20)
    first, second = seen[1], seen[3]
    assert torch.equal(first, second)
    lower = torch.tril(torch.ones(20, 20, dtype=torch.bool))
    assert (first[:, lower] > 0).all() and (first[:, lower] < 1).all()
    assert len(torch.unique(first[:, lower])) == int(lower.sum()) * 2


@pytest.fixture
def fake_cupy(monkeypatch):
    """A stand-in ``cupy`` that records its batched solves (torch does the work)."""
    solved = []

    def eigvalsh(x):
        solved.append(tuple(x.shape))
        w = torch.linalg.eigvalsh(x)
        fake_cupy_results.append(w)
        return w

    module = types.SimpleNamespace(
        from_dlpack=lambda x: x, linalg=types.SimpleNamespace(eigvalsh=eigvalsh)
    )
    monkeypatch.setitem(sys.modules, "cupy", module)
    return solved


def spd(*shape):
    x = torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(9))
    return x @ x.mT


fake_cupy_results = []


def test_cupy_solves_batches_of_matrices_above_32(fake_cupy):
    for x in (spd(3, 33, 33), spd(2, 2, 40, 40)):
        fake_cupy_results.clear()
        w = batched.cuda_eigvalsh(x)
        torch.testing.assert_close(w, torch.linalg.eigvalsh(x))
        # CuPy's own result comes back (through DLPack, no copy)
        assert w.data_ptr() == fake_cupy_results[0].data_ptr()
    assert fake_cupy == [(3, 33, 33), (2, 2, 40, 40)]


def test_torch_solves_small_matrices_and_single_ones(fake_cupy):
    for x in (spd(3, 32, 32), spd(40, 40), spd(5, 4, 4)):
        torch.testing.assert_close(batched.cuda_eigvalsh(x), torch.linalg.eigvalsh(x))
    assert fake_cupy == []


def test_a_failing_cupy_falls_back_to_torch(monkeypatch):
    def broken(x):
        raise RuntimeError("no device")

    module = types.SimpleNamespace(from_dlpack=broken, linalg=None)
    monkeypatch.setitem(sys.modules, "cupy", module)
    x = spd(2, 40, 40)
    torch.testing.assert_close(batched.cuda_eigvalsh(x), torch.linalg.eigvalsh(x))


def test_padded_size_by_hand():
    # m below 16 exactly; above, rounded up to a multiple of 2 ** (bit_length(m) - 4).
    table = {1: 1, 15: 15, 16: 16, 17: 18, 31: 32, 33: 36, 100: 104, 1000: 1024, 1025: 1152}
    assert {m: batched.padded_size(m) for m in table} == table


def test_the_gram_path_batches_on_cuda_only():
    assert batched.use_batched(torch.device("cuda"))
    assert batched.use_batched(torch.device("cuda", 1))
    assert not batched.use_batched(torch.device("cpu"))


def test_pick_device_keeps_the_cpu_at_break_even():
    # CPU 2^-20 s per unit of work, GPU 1 s flat: equal at work 2^20 = one 32 x 32 matrix.
    def measure(device, heads, L):
        return batched.work_of(heads, L) * 2.0**-20 if device == "cpu" else 1.0

    assert batched.pick_device(1, 32, measure=measure) == torch.device("cpu")
    assert batched.pick_device(2, 32, measure=measure) == torch.device("cuda")


def group_sizes(batch_shape, cap_matrices, monkeypatch):
    """Sizes of the solver's groups for the 7 Gram matrices of size class 36 (splits 33..39
    of L = 72: sizes 33..36 left of the middle, 35..33 right of it), with the byte cap set
    to ``cap_matrices`` padded 36 x 36 float64 matrices of this batch."""
    n, L = 36, 72
    per_matrix = n * n * 8 * int(torch.tensor(batch_shape).prod())
    monkeypatch.setattr(batched, "_GROUP_BYTES", cap_matrices * per_matrix)
    g = torch.Generator().manual_seed(1)
    T = torch.tril(torch.randn(*batch_shape, L, L, generator=g, dtype=F64))
    wanted = set(range(33, 40))
    sizes = []

    def solver(x):
        sizes.append(x.shape[0])
        assert x.shape[1:] == (*batch_shape, n, n)
        return torch.linalg.eigvalsh(x)

    results = dict(
        batched.batched_gram_spectra(
            spectra_module._gram_sides(T, wanted), L, tuple(batch_shape), solver, F64, "cpu"
        )
    )
    assert set(results) == wanted
    for i, s in results.items():  # the values do not depend on the grouping
        expected = torch.linalg.svdvals(T[..., i:, :i])
        torch.testing.assert_close(s, expected, rtol=0, atol=1e-6 * float(expected.amax()))
    return sizes


@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
def test_groups_fill_the_byte_cap_exactly(batch_shape, monkeypatch):
    assert group_sizes(batch_shape, 3, monkeypatch) == [3, 3, 1]  # 3 fit exactly
    assert group_sizes(batch_shape, 3.5, monkeypatch) == [3, 3, 1]
    assert group_sizes(batch_shape, 4.9, monkeypatch) == [4, 3]
    assert group_sizes(batch_shape, 7, monkeypatch) == [7]
    assert group_sizes(batch_shape, 0.5, monkeypatch) == [1] * 7  # never an empty group
