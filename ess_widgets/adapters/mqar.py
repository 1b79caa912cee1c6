"""``MQARHandle``: a shipped MQAR model (``ess_widgets.models``) seen as per-layer operators.

The handle has the interface of ``ModelHandle`` that the explorer and the ESS
table use (``num_layers``, ``layer_kinds``, ``num_channels``, ``encode``,
``operators``, ``ess_table``). Its operators are exactly the model's own
(``MQARModel.layer_operators``) with the batch axis removed, so the ESS is that of
the map the forward pass applies; TSS per split is the operators' own (``d_k``,
``d_state``, or the cache size ``i`` for softmax attention).

Inputs are token ids, or a text in the MQAR token format (``format_mqar``,
``parse_mqar``): tokens separated by spaces (or commas), each one of

======== ==============================================================
``k5``   key number 5 (token id 5; keys are ``k1 .. kK``)
``v12``  value number 12 (token id ``K + 12``; values are ``v1 .. v(V-1-K)``)
``q:k5`` key 5 read again as a query (the same token id as ``k5``)
``_``    the filler token (id 0)
``17``   a raw token id
======== ==============================================================

with ``K = (vocab_size - 1) // 2`` (``ess_widgets.tasks.mqar_vocab``). For the
shipped models (``vocab_size = 64``) keys are ``k1 .. k31``, values ``v1 .. v32``.
A sequence reads like ``"k3 v17 k5 v20 _ _ q:k5 _ q:k3"``. Token strings label a
key that already appeared earlier in the sequence as a query (``q:k5``).
"""

from __future__ import annotations

import re

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..models import MQARModel, load_mqar_model, mqar_model_names
from ..models.experiment import FRESH_SEED
from ..operators.base import CausalOperator
from ..tasks import mqar, mqar_vocab
from ..tasks.mqar import FILLER, MQARBatch
from .handle import DEFAULT_TOL, ModelHandle
from .layer_operators import LayerOperators
from .memory import check_budget, require
from .table import join_layers, layer_frame, token_dtype
from .tokens import Encoded, encode

__all__ = ["MQARHandle", "format_mqar", "parse_mqar", "mqar_tokens", "load_mqar"]

# The layer kind of each mixer family: the name of the operator family it runs.
KINDS = {
    "la": "linear_attention",
    "wla": "weighted_linear_attention",
    "gla": "gated_linear_attention",
    "sa": "softmax_attention",
    "s6": "selective_ssm",
}
FLOAT_BYTES = 4  # the models run in float32

_TOKEN = re.compile(r"^(?:(q:)?k(\d+)|v(\d+)|_|(\d+))$")
_SYNTAX = (
    "MQAR tokens are k<n> (key), v<n> (value), q:k<n> (a key read as a query), _ "
    "(filler) or a raw token id, separated by spaces"
)


def mqar_tokens(ids, vocab_size: int) -> tuple[str, ...]:
    """Readable labels of MQAR token ids: ``k3``, ``v17``, ``_``, ``q:k3`` (a repeated key).

    Parameters
    ----------
    ids : sequence of int
    vocab_size : int
        The model's vocabulary size (keys and values from ``mqar_vocab``).

    Returns
    -------
    tuple of str

    Examples
    --------
    >>> mqar_tokens([3, 40, 0, 3], 64)
    ('k3', 'v9', '_', 'q:k3')
    """
    keys, values = mqar_vocab(vocab_size)
    seen, out = set(), []
    for i in (int(t) for t in ids):
        if i == FILLER:
            out.append("_")
        elif i in keys:
            out.append(f"q:k{i}" if i in seen else f"k{i}")
            seen.add(i)
        elif i in values:
            out.append(f"v{i - values.start + 1}")
        else:
            raise ValueError(
                f"Token id {i} is outside the vocabulary of {vocab_size} tokens (0 .. "
                f"{vocab_size - 1})."
            )
    return tuple(out)


def format_mqar(ids, vocab_size: int) -> str:
    """MQAR token ids as text in the token format (see the module docstring).

    ``parse_mqar(format_mqar(ids, V), V)`` gives ``ids`` back.

    Examples
    --------
    >>> format_mqar([3, 40, 5, 33, 0, 5, 0, 3], 64)
    'k3 v9 k5 v2 _ q:k5 _ q:k3'
    """
    return " ".join(mqar_tokens(ids, vocab_size))


def parse_mqar(text: str, vocab_size: int) -> torch.Tensor:
    """Token ids (int64 ``(L,)``) of a text in the MQAR token format.

    Raises
    ------
    ValueError
        An empty text, a token that is not in the format, or a key, value or id
        outside the vocabulary (the message names the token and the valid range).

    Examples
    --------
    >>> parse_mqar("k3 v9 k5 v2 _ q:k5 _ k3", 64).tolist()
    [3, 40, 5, 33, 0, 5, 0, 3]
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}.")
    keys, values = mqar_vocab(vocab_size)
    parts = text.replace(",", " ").split()
    if not parts:
        raise ValueError(f"The MQAR text is empty. {_SYNTAX}, e.g. 'k3 v17 k5 v20 _ q:k3'.")
    ids = []
    for n, part in enumerate(parts):
        m = _TOKEN.match(part)
        if m is None:
            raise ValueError(f"Unknown MQAR token {part!r} at position {n}. {_SYNTAX}.")
        _, key, value, raw = m.groups()
        if key is not None:
            if not 1 <= int(key) <= len(keys):
                raise ValueError(
                    f"{part!r} at position {n} is not a key of this model: keys are "
                    f"k1 .. k{len(keys)}."
                )
            ids.append(keys.start + int(key) - 1)
        elif value is not None:
            if not 1 <= int(value) <= len(values):
                raise ValueError(
                    f"{part!r} at position {n} is not a value of this model: values are "
                    f"v1 .. v{len(values)}."
                )
            ids.append(values.start + int(value) - 1)
        elif raw is not None:
            if int(raw) >= vocab_size:
                raise ValueError(
                    f"Token id {raw} at position {n} is outside the vocabulary of "
                    f"{vocab_size} tokens (0 .. {vocab_size - 1})."
                )
            ids.append(int(raw))
        else:
            ids.append(FILLER)
    return torch.tensor(ids, dtype=torch.int64)


def _unbatched(op: CausalOperator, index: torch.Tensor | None = None) -> CausalOperator:
    """The model's operator ``(1, C, L, L)`` as ``(C, L, L)``; ``index`` selects channels.

    ``dense()`` slices the model's own dense operator and the recurrence is the
    model's own, so both are exactly what the forward pass uses.
    """

    def pick(t: torch.Tensor) -> torch.Tensor:
        t = t[0]
        return t if index is None else t[index]

    recurrence = None if op.recurrence is None else tuple(pick(t) for t in op.recurrence)
    return CausalOperator(
        kind=op.kind,
        length=op.length,
        tss=op.tss,
        recurrence=recurrence,
        dense_fn=lambda: pick(op.dense()),
        transition=op.transition,
    )


class MQARHandle:
    """A shipped MQAR model (``MQARModel``) with the interface of ``ModelHandle``.

    Build it with ``ess_widgets.load("mqar-gla-dk8-kv8")`` (any name of
    ``ess_widgets.models.mqar_model_names()``) or ``MQARHandle(model)``.

    Parameters
    ----------
    model : ess_widgets.models.MQARModel
    name : str, optional
    record : dict, optional
        The training record (``num_pairs``, ``seq_len``, ``vocab_size``, ``seed``,
        ...), from ``load_mqar_model(name, with_record=True)``; it sets the task
        of ``example()``.
    memory_budget : int, optional
        Bytes one call may allocate (2 GiB by default).

    Attributes
    ----------
    model, name, record, memory_budget
    num_layers : int
    layer_kinds : list of str
        The operator family of each layer: ``"linear_attention"``,
        ``"weighted_linear_attention"``, ``"gated_linear_attention"``,
        ``"softmax_attention"`` or ``"selective_ssm"``.
    tokenizer : None
        Text input is the MQAR token format (``parse_mqar``), not a tokenizer's.
    """

    tokenizer = None
    context_length = None  # no position embedding: any length works
    # Layer indexing as ModelHandle does it (the methods only use ``num_layers``).
    _layer_index = ModelHandle._layer_index
    _layer_list = ModelHandle._layer_list

    def __init__(
        self,
        model: MQARModel,
        *,
        name: str | None = None,
        record: dict | None = None,
        memory_budget: int | None = None,
    ):
        if not isinstance(model, MQARModel):
            raise TypeError(f"`model` must be an MQARModel, got {type(model).__name__}.")
        self.model = model.eval()
        self.name = name or f"mqar-{model.cfg.family}"
        self.record = dict(record or {})
        self.memory_budget = check_budget(memory_budget)

    @classmethod
    def from_name(cls, name: str, *, memory_budget: int | None = None) -> MQARHandle:
        """Load a shipped model by name (offline)."""
        model, record = load_mqar_model(name, with_record=True)
        return cls(model, name=name, record=record, memory_budget=memory_budget)

    # ------------------------------------------------------------------ facts
    @property
    def family(self) -> str:
        """The mixer family: ``"la"``, ``"wla"``, ``"gla"``, ``"sa"`` or ``"s6"``."""
        return self.model.cfg.family

    @property
    def vocab_size(self) -> int:
        return int(self.model.cfg.vocab_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.cfg.num_layers)

    @property
    def layer_kinds(self) -> list[str]:
        return [KINDS[self.family]] * self.num_layers

    @property
    def channel(self) -> str:
        """What one operator is: ``"channel"`` (S6) or ``"head"`` (the others, one head)."""
        return "channel" if self.family == "s6" else "head"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def num_channels(self, layer: int) -> int:
        """Operators per layer: 1 head, or ``d_inner`` channels for S6."""
        self._layer_index(layer)
        return int(self.model.num_channels)

    def __repr__(self) -> str:
        return (
            f"MQARHandle({self.name!r}, {self.family}, {self.num_layers} layers "
            f"({KINDS[self.family]}), state {self.model.cfg.state}, "
            f"vocab {self.vocab_size})"
        )

    # ----------------------------------------------------------------- inputs
    def example(self, seed: int = FRESH_SEED, **kwargs) -> MQARBatch:
        """One MQAR sequence of the model's training task (``num_pairs``, ``seq_len``,
        ``vocab_size`` from the record), from a seed other than the training one.

        ``kwargs`` override the task settings (e.g. ``num_pairs=4``).
        """
        cfg = self.model.cfg
        task = {
            "num_pairs": self.record.get("num_pairs", min(8, (cfg.vocab_size - 1) // 2)),
            "seq_len": self.record.get("seq_len", 64),
            "vocab_size": cfg.vocab_size,
        }
        task.update(kwargs)
        return mqar(1, seed=seed, **task)

    @property
    def default_text(self) -> str:
        """``example()`` in the MQAR token format: what the explorer shows first."""
        return format_mqar(self.example().inputs[0], self.vocab_size)

    def format(self, ids) -> str:
        """Token ids as MQAR text (``format_mqar``)."""
        return format_mqar(encode(ids).ids, self.vocab_size)

    def encode(self, inputs) -> Encoded:
        """Token ids and readable labels of MQAR text or token ids.

        Parameters
        ----------
        inputs : str or sequence of int or torch.Tensor of shape (L,) or (1, L)
            Text in the MQAR token format (module docstring) or token ids.

        Returns
        -------
        Encoded
            ``ids`` ``(L,)``, ``tokens`` (``"k3"``, ``"v17"``, ``"_"``, ``"q:k3"``),
            ``raw_tokens`` (the ids as text).

        Raises
        ------
        ValueError
            Empty input, an unknown token, ids outside the vocabulary, fewer than 2
            tokens.
        """
        if isinstance(inputs, str):
            inputs = parse_mqar(inputs, self.vocab_size)
        enc = encode(inputs)  # shapes, dtype, >= 0, at least 2 tokens
        if int(enc.ids.max()) >= self.vocab_size:
            raise ValueError(
                f"Token id {int(enc.ids.max())} is outside the vocabulary of "
                f"{self.vocab_size} tokens of this model."
            )
        return Encoded(enc.ids, mqar_tokens(enc.ids, self.vocab_size), enc.raw_tokens)

    # ------------------------------------------------------------- operators
    def _check_memory(self, L: int, budget: int, layers: int = 1) -> None:
        C, family = self.model.num_channels, self.family

        def need(length: int) -> int:
            # the forward pass of LA/WLA/GLA/SA builds (L, L) per layer; spectra are
            # float64 (C, L-1, K); SA's spectra run on its dense form.
            K = length // 2 if family == "sa" else min(self.model.cfg.state, length // 2)
            dense = FLOAT_BYTES * length * length * (C if family == "s6" else 1)
            return layers * (dense + 8 * C * (length - 1) * K) + dense

        require(f"{self.name} ({C} {self.channel}s per layer)", need, L, budget)

    def _layer_operators(self, enc: Encoded, layer: int, op, budget: int) -> LayerOperators:
        C = self.model.num_channels
        return LayerOperators(
            layer=layer,
            kind=KINDS[self.family],
            channel=self.channel,
            tokens=enc.tokens,
            token_ids=enc.ids,
            num_channels=C,
            memory_budget=budget,
            record={"operator": op, "model": self.name},
            build=lambda index: _unbatched(op, index),
            dense_bytes=lambda n, length: FLOAT_BYTES * n * length * length,
        )

    def _all_operators(self, ids: torch.Tensor) -> list[CausalOperator]:
        return self.model.layer_operators(ids[None].to(self.device))

    def operators(self, inputs, layer: int, *, memory_budget: int | None = None) -> LayerOperators:
        """The causal operators of one layer on one MQAR sequence.

        Parameters
        ----------
        inputs : str or sequence of int or torch.Tensor of shape (L,) or (1, L)
            MQAR text (``"k3 v17 _ q:k3"``) or token ids.
        layer : int
            Layer index; negative counts from the end.
        memory_budget : int, optional

        Returns
        -------
        LayerOperators
            ``dense()`` ``(C, L, L)`` is ``model.layer_operators(ids[None])[layer]
            .dense()[0]``; ``spectra()`` ``(C, L-1, K)`` through the recurrence
            (softmax attention: the dense path); ``tss`` ``(C, L-1)``.
        """
        budget = self.memory_budget if memory_budget is None else check_budget(memory_budget)
        index = self._layer_index(layer)
        enc = self.encode(inputs)
        self._check_memory(len(enc), budget)
        op = self._all_operators(enc.ids)[index]
        return self._layer_operators(enc, index, op, budget)

    def ess_table(
        self,
        text,
        layers=None,
        tol: float = DEFAULT_TOL,
        relative: bool = False,
        *,
        progress: bool | None = None,
        memory_budget: int | None = None,
        device=None,
        dtype=None,
    ) -> pd.DataFrame:
        """Tolerance- and entropy-ESS of every head or channel, split and layer.

        The same table as ``ModelHandle.ess_table`` (columns ``layer, kind, channel,
        split, token, tolerance_ess, entropy_ess, bound, tss``), on MQAR text or
        token ids. The shipped results (``models.experiment``) use
        ``tol=1e-2, relative=True``.
        """
        budget = self.memory_budget if memory_budget is None else check_budget(memory_budget)
        indices = self._layer_list(layers)
        enc = self.encode(text)
        self._check_memory(len(enc), budget, len(indices))
        tokens = token_dtype(enc.tokens)
        options = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        ops = self._all_operators(enc.ids)
        show = len(indices) > 1 if progress is None else bool(progress)
        frames = []
        for index in tqdm(indices, desc="ESS by layer", unit="layer", disable=not show):
            lay = self._layer_operators(enc, index, ops[index], budget)
            frames.append(layer_frame(lay, tol=tol, relative=relative, tokens=tokens, **options))
        table = join_layers(
            frames,
            enc,
            model=self.name,
            tol=tol,
            relative=relative,
            channel={KINDS[self.family]: self.channel},
        )
        return table


def load_mqar(name: str, *, device=None, memory_budget: int | None = None) -> MQARHandle:
    """``MQARHandle`` of a shipped model (``mqar_model_names()``), on the CPU by default."""
    handle = MQARHandle.from_name(name, memory_budget=memory_budget)
    if device is not None:
        handle.model.to(device)
    return handle


def is_mqar_name(name) -> bool:
    """Whether ``name`` is a shipped MQAR model."""
    return isinstance(name, str) and name.startswith("mqar-") and name in mqar_model_names()
