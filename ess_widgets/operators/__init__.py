"""Sequence mixers as causal operators ``y = T u``, one builder per family.

Every builder validates its inputs and returns a ``CausalOperator`` (dense ``T`` on
demand, the recurrence when the mixer has a finite state, the TSS per split). Next
to each builder sits a ``*_ref`` function: the mixer's own definition as a plain
loop, for checking ``T @ u`` against it.
"""

from .attention import attention_operator, softmax_attention, softmax_attention_ref
from .base import CausalOperator
from .convolution import convolution, convolution_ref
from .delta_rule import gated_delta_rule, gated_delta_rule_ref
from .linear_attention import (
    gated_linear_attention,
    linear_attention,
    linear_attention_ref,
    weighted_linear_attention,
)
from .lti import lti, lti_simulate, random_lti
from .mlstm import mlstm, mlstm_ref
from .rglru import rg_lru, rg_lru_ref
from .short_convolution import gated_short_convolution, gated_short_convolution_ref
from .ssm import selective_scan_ref, selective_ssm, ssd, ssd_ref
from .wkv import wkv4, wkv4_ref

__all__ = [
    "CausalOperator",
    "softmax_attention",
    "attention_operator",
    "softmax_attention_ref",
    "linear_attention",
    "weighted_linear_attention",
    "gated_linear_attention",
    "linear_attention_ref",
    "selective_ssm",
    "ssd",
    "selective_scan_ref",
    "ssd_ref",
    "lti",
    "lti_simulate",
    "random_lti",
    "convolution",
    "convolution_ref",
    "gated_delta_rule",
    "gated_delta_rule_ref",
    "wkv4",
    "wkv4_ref",
    "rg_lru",
    "rg_lru_ref",
    "gated_short_convolution",
    "gated_short_convolution_ref",
    "mlstm",
    "mlstm_ref",
]
