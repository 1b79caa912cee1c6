"""``MQARModel``: embedding, two [norm, mixer, residual, norm, MLP, residual] blocks, readout.

No positional encoding: the short convolution inside each mixer gives position
information (see ``mixers``). The readout is a final norm and an untied linear
layer onto the vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..operators import CausalOperator
from .mixers import FAMILIES, make_mixer

__all__ = ["MQARConfig", "MQARModel", "save_model", "load_model_file"]


@dataclass(frozen=True)
class MQARConfig:
    """Architecture of an ``MQARModel``.

    Attributes
    ----------
    family : str
        Mixer family: ``"la"``, ``"wla"``, ``"gla"``, ``"sa"`` or ``"s6"``.
    state : int
        ``d_k`` (LA/WLA/GLA), head size (SA) or ``d_state`` (S6).
    vocab_size : int
    d_model : int
    num_layers : int
    mlp_ratio : int
        Width of each block's MLP in units of ``d_model``; 0: no MLP (a Mamba-style
        block, the mixer alone).
    expand : int
        S6 only: ``d_inner = expand * d_model`` channels (Mamba uses 2); must be 1 for
        the other families.
    gate : bool
        S6 only: the output gate ``silu(z)`` of Mamba's block. ``False`` drops it (and
        its half of ``in_proj``): with it, S6 stays at a "bag of values" plateau on
        MQAR (accuracy ~0.2) within the CPU budget; without it, it learns (see the
        README, MQAR section).
    """

    family: str
    state: int
    vocab_size: int
    d_model: int = 48
    num_layers: int = 2
    mlp_ratio: int = 2
    expand: int = 1
    gate: bool = True

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"`family` must be one of {FAMILIES}, got {self.family!r}.")
        if not isinstance(self.expand, int) or self.expand < 1:
            raise ValueError(f"`expand` must be an int >= 1, got {self.expand!r}.")
        if self.expand != 1 and self.family != "s6":
            raise ValueError(
                f"`expand` applies to the 's6' family only, got expand={self.expand} for "
                f"{self.family!r}; use expand=1."
            )
        if not isinstance(self.gate, bool):
            raise TypeError(f"`gate` must be a bool, got {self.gate!r}.")
        if not self.gate and self.family != "s6":
            raise ValueError(
                f"`gate` applies to the 's6' family only, got gate=False for "
                f"{self.family!r}; use gate=True."
            )
        if not isinstance(self.mlp_ratio, int) or self.mlp_ratio < 0:
            raise ValueError(f"`mlp_ratio` must be an int >= 0, got {self.mlp_ratio!r}.")


class Block(nn.Module):
    def __init__(self, cfg: MQARConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.mixer = make_mixer(
            cfg.family, cfg.d_model, cfg.state, expand=cfg.expand, gate=cfg.gate
        )
        # mlp_ratio 0: no norm2/MLP at all (a Mamba-style block), so no unused parameters.
        self.norm2 = nn.LayerNorm(cfg.d_model) if cfg.mlp_ratio else None
        self.mlp = (
            nn.Sequential(
                nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model),
                nn.GELU(),
                nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model),
            )
            if cfg.mlp_ratio
            else None
        )

    def forward(self, x):
        return self.mlp_residual(x + self.mixer(self.norm1(x)))

    def mlp_residual(self, x):
        """``x + mlp(norm2(x))``, or ``x`` itself when the block has no MLP."""
        return x if self.mlp is None else x + self.mlp(self.norm2(x))


class MQARModel(nn.Module):
    """A small language model for MQAR whose mixers run through ``ess_widgets.operators``.

    Parameters
    ----------
    cfg : MQARConfig

    Examples
    --------
    >>> import torch
    >>> model = MQARModel(MQARConfig("gla", state=4, vocab_size=16, d_model=8))
    >>> ids = torch.zeros(2, 10, dtype=torch.long)
    >>> model(ids).shape
    torch.Size([2, 10, 16])
    >>> [op.kind for op in model.layer_operators(ids)]
    ['gated_linear_attention', 'gated_linear_attention']
    """

    def __init__(self, cfg: MQARConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, L, vocab_size)`` for token ids ``(B, L)``."""
        x = self.embed(inputs)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    @torch.no_grad()
    def layer_operators(self, inputs: torch.Tensor) -> list[CausalOperator]:
        """Each layer's mixer operator on ``inputs`` (``(B, L)`` token ids).

        ``dense()`` is ``(B, C, L, L)``: ``C = 1`` head for LA/WLA/GLA/SA, ``C = d_inner``
        channels for S6 (``num_channels``). These are the operators the forward pass applies.
        """
        ops = []
        x = self.embed(inputs)
        for block in self.blocks:
            ops.append(block.mixer.operator(block.norm1(x)))
            x = block(x)
        return ops

    def tss(self) -> int:
        """State per channel (head) of one layer: ``d_k`` or ``d_state``; None for SA."""
        return None if self.cfg.family == "sa" else self.cfg.state

    @property
    def num_channels(self) -> int:
        """Operators per layer: 1 head, or ``d_inner`` channels for S6."""
        return self.blocks[0].mixer.d_inner if self.cfg.family == "s6" else 1


def save_model(model: MQARModel, path, metadata: dict | None = None) -> None:
    """Write weights as safetensors; the config (and ``metadata``) go in its header."""
    from safetensors.torch import save_file

    meta = {"config": json.dumps(asdict(model.cfg))}
    meta.update({k: json.dumps(v) for k, v in (metadata or {}).items()})
    # float16 on disk (half the size); loaded back as float32.
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=meta)


def load_model_file(path) -> tuple[MQARModel, dict]:
    """Read a model written by ``save_model``: ``(model in eval mode, metadata)``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    if "config" not in meta:
        raise ValueError(f"{path} has no MQAR model config in its safetensors header.")
    model = MQARModel(MQARConfig(**meta.pop("config")))
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.eval(), meta
