"""Where and in what precision the core computes: devices, dtypes and the split workers.

The device rules are checked on a machine without CUDA by telling torch that CUDA
exists (``torch.device("cuda")`` needs no GPU to be built); the workers by giving
torch two threads for the length of a test.
"""

import threading

import pytest
import torch

import ess_widgets.core._batched as batched
from ess_widgets.core import spectra, spectra_ref
from ess_widgets.core._compute import resolve_device, resolve_dtype, split_workers
from ess_widgets.core.spectra import _default_device

F64 = torch.float64


@pytest.fixture
def fake_cuda(monkeypatch):
    """Torch says CUDA is available with one device (nothing is run on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


# --- resolve_device -------------------------------------------------------------------


def test_default_device_is_cuda_when_available(fake_cuda):
    assert resolve_device(None) == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("cpu:3") == torch.device("cpu", 3)  # only CUDA indices are counted


def test_default_device_is_the_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("meta") == torch.device("meta")  # not CUDA: nothing to check


def test_a_cuda_index_past_the_devices_is_a_value_error_naming_the_count(fake_cuda):
    with pytest.raises(ValueError, match=r"`device` = 'cuda:1' does not exist.* 1 CUDA device"):
        resolve_device("cuda:1")
    with pytest.raises(
        ValueError, match=r"`device` = device\(type='cuda', index=7\) does not exist"
    ):
        resolve_device(torch.device("cuda", 7))


def test_cuda_without_cuda_names_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0", torch.device("cuda", 3)):
        with pytest.raises(ValueError, match=r"`device` = .* asks for CUDA"):
            resolve_device(device)


def test_unknown_device_names_device():
    for device in ("gpu please", 3.5, "CPU"):
        with pytest.raises(ValueError, match=r"`device` must be a torch device"):
            resolve_device(device)


# --- resolve_dtype --------------------------------------------------------------------


def test_working_dtype_is_float64_by_default_and_half_precision_works_in_float32():
    assert resolve_dtype(None) is torch.float64
    assert resolve_dtype(torch.float64) is torch.float64
    assert resolve_dtype(torch.float32) is torch.float32
    assert resolve_dtype(torch.float16) is torch.float32
    assert resolve_dtype(torch.bfloat16) is torch.float32
    for bad in (torch.int64, torch.complex128, "float64"):
        with pytest.raises(TypeError, match=r"`dtype` must be a real floating torch dtype"):
            resolve_dtype(bad)


# --- split_workers --------------------------------------------------------------------


def test_split_workers_keep_order_bound_what_is_in_flight_and_restore_threads(two_threads):
    drawn = []

    def items():
        for k in range(11):
            drawn.append(k)
            yield k

    threads = set()

    def work(k):
        threads.add(threading.get_ident())
        return k * k

    with split_workers(torch.device("cpu")) as imap:
        assert torch.get_num_threads() == 1  # one LAPACK thread per worker
        results = imap(work, items())
        assert next(results) == 0
        # 2 workers, at most 2 tasks each in flight: 4 items drawn for the first result.
        assert drawn == [0, 1, 2, 3]
        assert list(results) == [k * k for k in range(1, 11)]
    assert torch.get_num_threads() == 2
    assert threading.get_ident() not in threads
    assert 1 <= len(threads) <= 2


def test_split_workers_restore_threads_after_an_error(two_threads):
    def work(k):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), split_workers(torch.device("cpu")) as imap:
        list(imap(work, range(3)))
    assert torch.get_num_threads() == 2


def test_split_workers_run_in_the_caller_off_the_cpu_or_with_one_thread(two_threads):
    # CUDA queues its work asynchronously: no pool, and torch keeps its threads.
    for device in (torch.device("meta"), torch.device("cuda")):
        with split_workers(device) as imap:
            assert torch.get_num_threads() == 2
            callers = list(imap(lambda k: threading.get_ident(), range(3)))
        assert callers == [threading.get_ident()] * 3
    torch.set_num_threads(1)
    with split_workers(torch.device("cpu")) as imap:
        callers = list(imap(lambda k: threading.get_ident(), range(3)))
    assert callers == [threading.get_ident()] * 3
    assert torch.get_num_threads() == 1


def test_spectra_with_two_workers_equals_one_worker(two_threads):
    g = torch.Generator().manual_seed(3)
    T = torch.tril(torch.randn(3, 21, 21, generator=g, dtype=F64))
    pooled = {m: spectra(T, method=m) for m in ("svd", "gram")}
    torch.set_num_threads(1)
    for m, s in pooled.items():
        torch.testing.assert_close(
            s, spectra(T, method=m), rtol=1e-12, atol=1e-12 * float(s.amax())
        )


# --- spectra's default device for the Gram path --------------------------------------


def test_gram_default_device_asks_the_cost_model_only_above_the_first_calibration(
    fake_cuda, monkeypatch
):
    asked = []

    def pick(heads, L):
        asked.append((heads, L))
        return torch.device("cuda")

    monkeypatch.setattr(batched, "pick_device", pick)
    small_heads, small_L = batched._CALIBRATION[0]
    # At or below the first calibration problem: the CPU, without a measurement.
    assert _default_device(torch.zeros(small_heads, small_L, small_L)) == torch.device("cpu")
    assert _default_device(torch.zeros(1, small_L, small_L)) == torch.device("cpu")
    assert asked == []
    # Above it: the cost model decides, for the number of matrices and their size.
    assert _default_device(torch.zeros(2, 3, small_L, small_L)) == torch.device("cuda")
    # One 91 x 91 matrix: 91^4 > 4 * 64^4.
    assert _default_device(torch.zeros(91, 91)) == torch.device("cuda")
    assert asked == [(6, small_L), (1, 91)]
    assert all(type(h) is int for h, _ in asked)


def test_gram_default_device_is_the_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(batched, "pick_device", lambda heads, L: torch.device("cuda"))
    assert _default_device(torch.zeros(8, 300, 300)) == torch.device("cpu")


# --- spectra_ref's arguments ----------------------------------------------------------


def test_spectra_ref_works_in_the_dtype_asked_and_checks_causality():
    g = torch.Generator().manual_seed(4)
    T = torch.tril(torch.randn(2, 9, 9, generator=g, dtype=F64))
    s32 = spectra_ref(T, dtype=torch.float32)
    assert s32.dtype == torch.float32
    torch.testing.assert_close(s32, spectra_ref(T).float(), rtol=1e-5, atol=1e-5)
    upper = T.clone()
    upper[0, 0, 1] = 1.0
    with pytest.raises(ValueError, match="`T`"):
        spectra_ref(upper)
    # check_causal=False reads the lower part only: the entry above is ignored.
    assert torch.equal(spectra_ref(upper, check_causal=False), spectra_ref(T))


def test_gram_path_asks_the_cost_model_where_to_compute(fake_cuda, monkeypatch):
    asked = []

    def pick(heads, L):
        asked.append((heads, L))
        return torch.device("cpu")

    monkeypatch.setattr(batched, "pick_device", pick)
    T = torch.tril(torch.ones(2, 100, 100, dtype=F64))
    spectra(T, method="gram", splits=[50])
    assert asked == [(2, 100)]
    spectra(T, method="svd", splits=[50])  # the SVD path stays on the CPU without asking
    assert asked == [(2, 100)]
