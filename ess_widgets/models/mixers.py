"""Sequence mixers whose output is computed through the operators layer.

Every mixer builds its ``CausalOperator`` from its projections (``operator(x)``)
and returns ``out_proj(T v)``, so the ESS of ``operator(x)`` is the ESS of exactly
the map the model runs:

- ``LinearAttentionMixer`` (``"la"``, ``"wla"``, ``"gla"``): one head of
  ``d_k``-dimensional keys, values of width ``d_model``. ``T = op.dense()``
  (``(B, 1, L, L)``: one head), output ``T @ v``. LA: ``T[i, j] = q_i . k_j``; WLA: a learned,
  input-independent decay per key dimension; GLA: gates
  ``alpha_t = sigmoid(W_a x_t + b) ** (1 / 16)`` (GLA's temperature 16, bias set
  so the gates start near 1). State per value channel (TSS): ``d_k``.
- ``SoftmaxAttentionMixer`` (``"sa"``): one causal softmax head. ``T @ v``.
  TSS at split ``i``: ``i`` (the cache).
- ``SelectiveSSMMixer`` (``"s6"``): Mamba's S6 mixer: ``dt = softplus(W_dt x +
  dt_bias)`` (``dt`` log-uniform in ``[1e-2, 1e-1]`` at init), ``A = -exp(A_log)``
  (init ``A_log = 0``, i.e. ``A = -1``: slower than S4D-real's ``-(1..N)``),
  ``B, C = W_B x, W_C x`` (their rows of ``x_proj`` start 16x PyTorch's default,
  at O(1): otherwise the model stays at chance on MQAR within the CPU budget), one
  operator per channel of the ``d_inner = expand * d_model`` channels (``expand`` 1
  by default, to keep CPU training short; Mamba uses 2). The output is the
  recurrence ``op.recurrence = (a, b, c)`` run step by step (``x_t = a_t * x_(t-1) + b_t u_t``,
  ``y_t = c_t . x_t``), which equals ``op.dense() @ u`` (tested) at O(L N) instead
  of O(L^2 N) per channel. TSS per channel: ``d_state``; the skip ``D u`` and the
  gate ``silu(z)`` sit outside the operator (the diagonal and a row scaling,
  docs/definitions.md, the operator view). ``gate=False`` drops the gate: with it,
  S6 stays on MQAR at a plateau where it outputs one of the sequence's values
  without binding it to its key (accuracy ~0.2 with 8 pairs, at expansion 1 or 2);
  without it, it learns (scripts/train_mqar.py, the ``s6ng`` models).

All mixers apply a short causal depthwise convolution (kernel 4) to their input
first, as in Mamba and the Zoology MQAR baselines: it lets a layer see the previous
token, which recall needs (keys and values sit in adjacent positions). The
convolution is part of the input projection and is not counted in the mixer's ESS.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..operators import (
    CausalOperator,
    gated_linear_attention,
    linear_attention,
    selective_ssm,
    softmax_attention,
    weighted_linear_attention,
)

__all__ = [
    "ShortConv",
    "LinearAttentionMixer",
    "SoftmaxAttentionMixer",
    "SelectiveSSMMixer",
    "make_mixer",
    "FAMILIES",
]

FAMILIES = ("la", "wla", "gla", "sa", "s6")

GLA_TEMPERATURE = 16.0

# S6 init (see SelectiveSSMMixer): dt range, scale of the B/C rows of x_proj.
DT_MIN, DT_MAX, BC_INIT_SCALE = 1e-2, 1e-1, 16.0


class ShortConv(nn.Module):
    """Causal depthwise 1-D convolution over the sequence, ``(B, L, D) -> (B, L, D)``."""

    def __init__(self, dim: int, kernel: int = 4):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(dim, dim, kernel, groups=dim, padding=kernel - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = x.shape[-2]
        return self.conv(x.mT)[..., :L].mT


class LinearAttentionMixer(nn.Module):
    """LA / WLA / GLA with one head of key size ``d_k`` (see the module docstring)."""

    def __init__(self, d_model: int, d_k: int, variant: str = "la"):
        super().__init__()
        if variant not in ("la", "wla", "gla"):
            raise ValueError(f"`variant` must be 'la', 'wla' or 'gla', got {variant!r}.")
        self.variant, self.d_k = variant, d_k
        self.conv = ShortConv(d_model)
        self.q_proj = nn.Linear(d_model, d_k, bias=False)
        self.k_proj = nn.Linear(d_model, d_k, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        if variant == "wla":
            # decays 1 - 2^(-1 - 6 n / d_k): from 0.5 to ~0.99, RetNet-like spread.
            lam = 1 - 2.0 ** (-1 - 6 * torch.arange(d_k) / max(d_k - 1, 1))
            self.decay_logit = nn.Parameter(torch.log(lam / (1 - lam)))
        if variant == "gla":
            self.gate_proj = nn.Linear(d_model, d_k)
            nn.init.zeros_(self.gate_proj.weight)
            # sigmoid(b) ** (1/16) ~ 0.95-1: gates start open, GLA-style.
            with torch.no_grad():
                self.gate_proj.bias.uniform_(1.0, 5.0)
                self.gate_proj.weight.normal_(0.0, 0.02)

    def _qkv(self, x):
        # q, k with a head axis of size 1: operators are (B, 1, L, L), as for S6's channels.
        xc = self.conv(x)
        q = self.q_proj(xc)[:, None] / math.sqrt(self.d_k)
        return q, self.k_proj(xc)[:, None], self.v_proj(xc), xc

    def _operator(self, q, k, xc) -> CausalOperator:
        if self.variant == "la":
            return linear_attention(q, k)
        if self.variant == "wla":
            return weighted_linear_attention(q, k, torch.sigmoid(self.decay_logit))
        log_gate = F.logsigmoid(self.gate_proj(xc)[:, None]) / GLA_TEMPERATURE
        return gated_linear_attention(q, k, torch.exp(log_gate))

    def operator(self, x: torch.Tensor) -> CausalOperator:
        """The mixer's operator on ``x`` (``(B, L, d_model)``): ``dense()`` is ``(B, 1, L, L)``."""
        q, k, _, xc = self._qkv(x)
        return self._operator(q, k, xc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, xc = self._qkv(x)
        return self.out_proj((self._operator(q, k, xc).dense() @ v[:, None])[:, 0])

    def tss(self) -> int:
        return self.d_k


class SoftmaxAttentionMixer(nn.Module):
    """One causal softmax attention head of size ``d_head``."""

    def __init__(self, d_model: int, d_head: int):
        super().__init__()
        self.d_head = d_head
        self.conv = ShortConv(d_model)
        self.q_proj = nn.Linear(d_model, d_head, bias=False)
        self.k_proj = nn.Linear(d_model, d_head, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def operator(self, x: torch.Tensor) -> CausalOperator:
        """The mixer's operator on ``x``: ``dense()`` is ``(B, 1, L, L)``."""
        xc = self.conv(x)
        return softmax_attention(self.q_proj(xc)[:, None], self.k_proj(xc)[:, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = self.operator(x).dense()
        return self.out_proj((T @ self.v_proj(self.conv(x))[:, None])[:, 0])


class SelectiveSSMMixer(nn.Module):
    """S6 / Mamba-style selective SSM with ``d_inner`` channels of state ``d_state``."""

    def __init__(
        self,
        d_model: int,
        d_state: int,
        d_inner: int | None = None,
        dt_rank=None,
        *,
        gate: bool = True,
    ):
        super().__init__()
        d_inner = d_model if d_inner is None else d_inner
        dt_rank = max(1, math.ceil(d_model / 16)) if dt_rank is None else dt_rank
        self.d_inner, self.d_state, self.dt_rank, self.gate = d_inner, d_state, dt_rank, gate
        # u (the SSM's input) and, with the gate, z: Mamba's in_proj
        self.in_proj = nn.Linear(d_model, (2 if gate else 1) * d_inner, bias=False)
        self.conv = ShortConv(d_inner)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        # A = -1 for every state (A_log = 0): slower decays than S4D-real's -(1..N), so a
        # key-value pair written early in the sequence is still there at its query.
        self.A_log = nn.Parameter(torch.zeros(d_inner, d_state))
        self.D = nn.Parameter(torch.ones(d_inner))
        with torch.no_grad():
            # Mamba's dt init (inverse softplus bias), log-uniform in [DT_MIN, DT_MAX].
            lo, hi = math.log(DT_MIN), math.log(DT_MAX)
            dt = torch.exp(torch.rand(d_inner) * (hi - lo) + lo)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            # B and C start at O(1) (default init times BC_INIT_SCALE): with the default
            # init the long-range path dt * (C . B) * u is ~1e-4 of the local one and
            # the model sits at chance on MQAR (see scripts/train_mqar.py).
            self.x_proj.weight[dt_rank:].mul_(BC_INIT_SCALE)

    def _parts(self, x):
        u, z = self.in_proj(x).chunk(2, dim=-1) if self.gate else (self.in_proj(x), None)
        u = F.silu(self.conv(u))
        dt_in, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt_in))
        return u, z, dt, B, C

    def _operator(self, dt, B, C) -> CausalOperator:
        return selective_ssm(dt, -torch.exp(self.A_log), B, C)

    def operator(self, x: torch.Tensor) -> CausalOperator:
        """The mixer's operator on ``x``: ``dense()`` is ``(B, d_inner, L, L)``."""
        _, _, dt, B, C = self._parts(x)
        return self._operator(dt, B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, z, dt, B, C = self._parts(x)
        y = scan(self._operator(dt, B, C), u.mT)  # (B, d_inner, L)
        y = y.mT + u * self.D
        return self.out_proj(y * F.silu(z) if self.gate else y)

    def tss(self) -> int:
        return self.d_state


def scan(op: CausalOperator, u: torch.Tensor) -> torch.Tensor:
    """Run an operator's diagonal recurrence on ``u`` (``(..., L)``): equals ``op.dense() @ u``.

    ``x_t = a_t * x_(t-1) + b_t u_t``, ``y_t = c_t . x_t`` with ``(a, b, c) = op.recurrence``
    each ``(..., L, N)``. At MQAR's sizes (``L = 64``, batch 64, 64 channels) this loop
    is the fastest exact form on one CPU thread: ~9 ms forward, ~14 ms backward, vs ~3x
    that for a log-depth (Hillis-Steele) scan; the closed-form dense operator costs
    ``O(L^2 N)`` per channel and ``N`` saved ``(B, D, L, L)`` masks in the backward.
    """
    a, b, c = op.recurrence
    # unbind, not a[..., t, :]: its backward is one stack, not L full-size zero grads.
    a_t, bu_t = a.unbind(-2), (b * u[..., None]).unbind(-2)
    h = torch.zeros_like(bu_t[0])
    states = []
    for t in range(u.shape[-1]):
        h = a_t[t] * h + bu_t[t]
        states.append(h)
    return (torch.stack(states, dim=-2) * c).sum(-1)


def make_mixer(
    family: str, d_model: int, state: int, *, expand: int = 1, gate: bool = True
) -> nn.Module:
    """A mixer of ``family`` (one of ``FAMILIES``) with state knob ``state``.

    ``state`` is ``d_k`` for LA/WLA/GLA, the head size for SA, ``d_state`` for S6;
    ``expand`` (S6 only) sets ``d_inner = expand * d_model``; ``gate=False`` (S6 only)
    drops the output gate ``silu(z)``.
    """
    if (expand != 1 or not gate) and family != "s6":
        raise ValueError(
            f"`expand` and `gate` apply to 's6' only, got expand={expand}, gate={gate} "
            f"for {family!r}."
        )
    if family in ("la", "wla", "gla"):
        return LinearAttentionMixer(d_model, state, family)
    if family == "sa":
        return SoftmaxAttentionMixer(d_model, state)
    if family == "s6":
        return SelectiveSSMMixer(d_model, state, d_inner=expand * d_model, gate=gate)
    raise ValueError(f"`family` must be one of {FAMILIES}, got {family!r}.")
