"""``MQARHandle``: a shipped MQAR model (``ess_widgets.models``) seen as per-layer operators.

The handle is an ``OperatorHandle`` like ``ModelHandle`` (``num_layers``,
``mixers``, ``num_channels``, ``encode``, ``operators``, ``layer_operators``,
``ess_table``, ``estimate``). Its one hook records the input of every block's
mixer during the model's own forward pass (a forward pre-hook) and builds the
mixer's operator from it (``mixer.operator(x)``, the map the mixer's forward
applies), so the operators are those of the pass that made the logits. TSS per
split is the operators' own (``d_k``, ``d_state``, or the cache size ``i`` for
softmax attention).

Inputs are token ids, or a text in the MQAR token format
(``ess_widgets.tasks.format_mqar``, ``parse_mqar``), e.g.
``"k3 v17 k5 v20 _ _ q:k5 _ q:k3"``: ``k<n>`` keys, ``v<n>`` values, ``q:k<n>`` a key
read again as a query, ``_`` the filler, or raw token ids. For the shipped models
(``vocab_size = 64``) keys are ``k1 .. k31``, values ``v1 .. v32``.
"""

from __future__ import annotations

import torch

from ..models import MQARModel, load_mqar_model
from ..models.experiment import FRESH_SEED
from ..operators.base import CausalOperator
from ..tasks import format_mqar, mqar, mqar_tokens, parse_mqar
from ..tasks.mqar import MQARBatch
from .base import Footprint
from .interface import Capture, MixerSpec, OperatorHandle
from .memory import check_budget
from .tokens import encode

__all__ = ["MQARHandle", "format_mqar", "parse_mqar", "mqar_tokens"]

# Per mixer family of the MQAR models: (mixer name, operator family).
MIXERS = {
    "la": ("linear_attention", "linear_attention"),
    "wla": ("linear_attention", "weighted_linear_attention"),
    "gla": ("linear_attention", "gated_linear_attention"),
    "sa": ("attention", "softmax_attention"),
    "s6": ("ssm", "selective_ssm"),
}
KINDS = {family: kind for family, (_, kind) in MIXERS.items()}
FLOAT_BYTES = 4  # the models run in float32


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


class MQARHandle(OperatorHandle):
    """A shipped MQAR model (``MQARModel``) as an ``OperatorHandle``.

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
    family : str
        ``"MQAR"``.
    mixer_family : str
        ``"la"``, ``"wla"``, ``"gla"``, ``"sa"`` or ``"s6"``.
    tokenizer : None
        Text input is the MQAR token format (``parse_mqar``), not a tokenizer's.
    """

    family = "MQAR"

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
        mixer, kind = MIXERS[self.mixer_family]
        C = int(model.num_channels)
        state = None if self.mixer_family == "sa" else int(model.cfg.state)
        self._blocks = [
            (
                MixerSpec(
                    layer=i,
                    mixer=mixer,
                    kind=kind,
                    channel_label="channel" if self.mixer_family == "s6" else "head",
                    num_channels=C,
                    state_size=state,
                    footprint=self._footprint,
                ),
            )
            for i in range(int(model.cfg.num_layers))
        ]

    @classmethod
    def from_name(cls, name: str, *, memory_budget: int | None = None) -> MQARHandle:
        """Load a shipped model by name (offline)."""
        model, record = load_mqar_model(name, with_record=True)
        return cls(model, name=name, record=record, memory_budget=memory_budget)

    # ------------------------------------------------------------------ facts
    @property
    def mixer_family(self) -> str:
        """The mixer family: ``"la"``, ``"wla"``, ``"gla"``, ``"sa"`` or ``"s6"``."""
        return self.model.cfg.family

    @property
    def vocab_size(self) -> int:
        return int(self.model.cfg.vocab_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        return (
            f"MQARHandle({self.name!r}, {self.mixer_family}, {self.num_layers} layers "
            f"({KINDS[self.mixer_family]}), state {self.model.cfg.state}, "
            f"vocab {self.vocab_size})"
        )

    def _footprint(self, L: int) -> Footprint:
        C, family = int(self.model.num_channels), self.mixer_family
        # The forward pass of LA/WLA/GLA/SA builds (L, L) per layer (S6: per channel);
        # spectra are float64 (C, L-1, K); SA's spectra run on its dense form.
        K = L // 2 if family == "sa" else min(self.model.cfg.state, L // 2)
        dense = FLOAT_BYTES * L * L * (C if family == "s6" else 1)
        spectra = 8 * C * (L - 1) * K
        return Footprint(
            capture=dense + spectra, peak=2 * dense + spectra, dense=FLOAT_BYTES * C * L * L
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

    def _text_ids(self, text: str):
        return parse_mqar(text, self.vocab_size)

    def _token_strings(self, ids):
        return mqar_tokens(ids, self.vocab_size), tuple(str(int(i)) for i in ids)

    # -------------------------------------------------------------- capture
    def _capture(self, ids: torch.Tensor, specs: list[MixerSpec]) -> dict:
        """Run the model's forward pass once; each requested block's mixer operator on
        the mixer's own input, recorded by a forward pre-hook."""
        inputs: dict = {}
        blocks = self.model.blocks
        wanted = {s.layer for s in specs}
        handles = []

        def hook_for(index):
            def hook(module, args):
                inputs[index] = args[0].detach()

            return hook

        for index in wanted:
            handles.append(blocks[index].mixer.register_forward_pre_hook(hook_for(index)))
        try:
            with torch.no_grad():
                self.model(ids[None].to(self.device))
        finally:
            for handle in handles:
                handle.remove()
        out = {}
        for spec in specs:
            with torch.no_grad():
                op = blocks[spec.layer].mixer.operator(inputs[spec.layer])
            out[spec.key] = Capture(
                record={"operator": op, "input": inputs[spec.layer], "model": self.name},
                build=lambda index, op=op: _unbatched(op, index),
            )
        return out
