"""The batched (GPU) Gram path, run on the CPU: grouping by size class and zero padding.

No GPU here: the grouping, padding, unpadding and dispatch run on the CPU with torch's
CPU eigensolver standing in for the CUDA one (the only call the CPU cannot cover),
and are compared with the plain per-split path to 1e-12 sigma_1.
"""

import numpy as np
import pytest
import torch

import ess_widgets.core._batched as batched
from ess_widgets import normalize_splits, spectra

F64 = torch.float64


def assert_same_to_1e12(got, plain, sigma_1):
    """Equal to 1e-12 sigma_1 above the Gram path's noise floor, and in the squares.

    Values below about sqrt(eps) sigma_1 are square roots of rounding noise in the
    Gram matrix's eigenvalues: any change of rounding (padding, another batch)
    moves them by up to that floor, so for them the eigenvalues sigma^2 are compared.
    """
    significant = plain >= 1e-6 * sigma_1
    assert ((got - plain).abs() <= 1e-12 * sigma_1)[significant].all()
    assert ((got**2 - plain**2).abs() <= 1e-12 * sigma_1**2).all()
    assert (got[~significant] <= 1e-6 * sigma_1.expand_as(got)[~significant]).all()


@pytest.fixture
def batched_on_cpu(monkeypatch):
    """Route spectra(method="gram") through the batched path on the CPU; record solves."""
    calls = []

    def solver(x):
        calls.append(tuple(x.shape))
        return torch.linalg.eigvalsh(x)

    monkeypatch.setattr(batched, "use_batched", lambda device: True)
    monkeypatch.setattr(batched, "cuda_eigvalsh", solver)
    return calls


def operators(seed):
    g = torch.Generator().manual_seed(seed)
    L = 70
    mask = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
    attention = torch.softmax(torch.randn(3, L, L, generator=g).masked_fill(mask, -torch.inf), -1)
    low_rank = torch.tril(
        torch.randn(2, L, 3, generator=g, dtype=F64) @ torch.randn(2, 3, L, generator=g, dtype=F64)
    )
    return {
        "attention-float32": attention,  # Gram path by default
        "rank-3": low_rank,  # most eigenvalues are zero: padding must not move them
        "tiny-entries": torch.tril(torch.randn(2, L, L, generator=g, dtype=F64)) * 1e-200,
    }


@pytest.mark.parametrize("name", ["attention-float32", "rank-3", "tiny-entries"])
@pytest.mark.parametrize("splits", [None, [69, 1, 35, 36, 35], 5])
def test_batched_path_matches_plain_path(batched_on_cpu, monkeypatch, name, splits):
    T = operators(0)[name]
    batched_on_cpu.clear()
    got = spectra(T, method="gram", splits=splits)
    assert batched_on_cpu, "the batched path did not run"
    monkeypatch.setattr(batched, "use_batched", lambda device: False)
    plain = spectra(T, method="gram", splits=splits)
    sigma_1 = plain[..., :1].amax(-2, keepdim=True)
    assert got.shape == plain.shape
    assert_same_to_1e12(got, plain, sigma_1)
    # and both are the blocks' singular values (numpy SVD), to the Gram path's accuracy
    for row, i in enumerate(normalize_splits(splits, 70)[:4]):
        m = min(i, 70 - i)
        expected = np.linalg.svd(T.double().numpy()[..., i:, :i], compute_uv=False)
        assert np.abs(got[..., row, :m].numpy() - expected).max() <= 1e-7 * float(sigma_1.max())


def test_groups_are_size_classes_with_little_padding(batched_on_cpu):
    T = operators(1)["rank-3"]
    spectra(T, method="gram")
    sizes = [shape[-1] for shape in batched_on_cpu]
    assert len(sizes) == len(set(sizes))  # one solve per size class (one group each)
    assert set(sizes) == {batched.padded_size(m) for m in range(1, 36)}
    assert all(shape[1:-2] == (2,) for shape in batched_on_cpu)  # the heads stay a batch
    assert sum(shape[0] for shape in batched_on_cpu) == 69  # every split once


def test_group_byte_cap_splits_groups_without_changing_values(batched_on_cpu, monkeypatch):
    T = operators(2)["attention-float32"]
    whole = spectra(T)
    calls = len(batched_on_cpu)
    monkeypatch.setattr(batched, "_GROUP_BYTES", 3 * 8 * 8 * 8 * 3)  # a few small matrices
    capped = spectra(T)
    assert len(batched_on_cpu) - calls > calls
    assert_same_to_1e12(capped, whole, whole[..., :1].amax())


def test_padded_size_is_a_small_overestimate():
    for m in range(1, 3000):
        n = batched.padded_size(m)
        assert m <= n <= m + m // 8
        if m < 16:
            assert n == m
    assert len({batched.padded_size(m) for m in range(1, 513)}) < 100  # few classes


def test_padding_drops_exactly_the_extra_eigenvalues():
    g = torch.Generator().manual_seed(3)
    H = torch.randn(40, 5, generator=g, dtype=F64)
    gram = H.T @ H  # 5 x 5, positive definite
    rank_deficient = H[:, :2] @ H[:, :2].T  # 40 x 40, rank 2
    for G in (gram, rank_deficient):
        m = G.shape[-1]
        items = [(m, G, None)]  # i = m left of the middle of L = 2m + 1
        ((i, s),) = list(
            batched.batched_gram_spectra(
                [iter(items), iter([])], 2 * m + 1, (), torch.linalg.eigvalsh, F64, "cpu"
            )
        )
        plain = torch.linalg.eigvalsh(G).flip(-1).clamp_min(0).sqrt()
        assert i == m and s.shape == (m,)
        assert_same_to_1e12(s, plain, plain[0])


def test_cuda_solver_falls_back_to_torch_without_cupy():
    x = torch.randn(3, 40, 40, dtype=F64, generator=torch.Generator().manual_seed(4))
    x = x @ x.mT
    torch.testing.assert_close(batched.cuda_eigvalsh(x), torch.linalg.eigvalsh(x))


def test_pick_device_follows_the_measured_cost_model():
    # A GPU with 50 ms of overhead and 20x the CPU's throughput.
    gamma = 6.5e-12  # CPU seconds per unit of heads * L^4 (about 1.8 s for 4 x 512 here)

    def measure(device, heads, L):
        work = batched.work_of(heads, L)
        return gamma * work if device == "cpu" else 0.05 + gamma / 20 * work

    break_even = 0.05 / (gamma - gamma / 20)
    small, large = batched.work_of(4, 64), batched.work_of(12, 1024)
    assert small < break_even < large
    assert batched.pick_device(4, 64, measure=measure).type == "cpu"
    assert batched.pick_device(12, 1024, measure=measure).type == "cuda"

    def slow_gpu(device, heads, L):  # the GPU never wins
        return gamma * batched.work_of(heads, L) * (1 if device == "cpu" else 3)

    assert batched.pick_device(12, 4096, measure=slow_gpu).type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the machine without CUDA")
def test_default_device_is_the_cpu_without_cuda():
    assert batched.pick_device(100, 4096).type == "cpu"
    T = torch.tril(torch.rand(2, 300, 300))  # float32: the Gram path, large enough to ask
    assert spectra(T, splits=[150]).device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batched_path_matches_cpu():
    T = operators(5)["attention-float32"]
    cpu = spectra(T, device="cpu")
    gpu = spectra(T.cuda(), device="cuda").cpu()
    assert_same_to_1e12(gpu, cpu, cpu[..., :1].amax())
