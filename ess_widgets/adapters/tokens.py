"""Inputs to token ids, and token ids to readable token strings.

Token strings are decoded one id at a time, so that each split of an operator
has the text of the token read just before it. They stay plain text: escaping
for HTML or charts is the views' job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Encoded", "encode", "token_strings"]


@dataclass(frozen=True)
class Encoded:
    """A tokenized input.

    Attributes
    ----------
    ids : torch.Tensor of int64, shape (L,)
    tokens : tuple of str
        Readable text of each token (``" the"``), decoded one id at a time.
    raw_tokens : tuple of str
        The tokenizer's own token strings (``"Ġthe"``), or the ids as text
        without a tokenizer.
    """

    ids: torch.Tensor
    tokens: tuple[str, ...]
    raw_tokens: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.tokens)


def token_strings(ids, tokenizer=None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Readable and raw token strings of ``ids``, one id at a time.

    Parameters
    ----------
    ids : sequence of int
    tokenizer : transformers tokenizer, optional
        Without one, both forms are the ids written as text.

    Returns
    -------
    tokens, raw_tokens : tuple of str
        ``tokens`` from ``tokenizer.decode([id])`` (a leading SentencePiece
        ``"▁"`` kept as a space), ``raw_tokens`` from ``convert_ids_to_tokens``.

    Examples
    --------
    >>> token_strings([5, 7])
    (('5', '7'), ('5', '7'))
    """
    ids = [int(i) for i in ids]
    if tokenizer is None:
        text = tuple(str(i) for i in ids)
        return text, text
    raw = tuple(str(t) for t in tokenizer.convert_ids_to_tokens(ids))
    readable = []
    for i, r in zip(ids, raw):
        text = tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if r.startswith("▁") and not text.startswith(" "):
            text = " " + text  # SentencePiece drops the space of a lone word piece
        readable.append(text)
    return tuple(readable), raw


_INT64_MAX = 2**63 - 1


def _ids_tensor(inputs) -> torch.Tensor:
    if isinstance(inputs, (bytes, bytearray, memoryview)):
        raise TypeError(
            "`inputs` must be a text (str) or a sequence of int token ids, got "
            f"{type(inputs).__name__}: decode it first (inputs.decode('utf-8'))."
        )
    t = inputs.detach().cpu() if isinstance(inputs, torch.Tensor) else None
    if t is not None and t.dtype in (torch.uint16, torch.uint32, torch.uint64):
        inputs, t = t.numpy(), None  # unsigned ids: range-checked like numpy's below
    if t is None:
        arr = np.asarray(inputs)
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise TypeError(
                "`inputs` must be a text (str) or a sequence of int token ids, got a ragged, "
                f"mixed or string sequence (dtype {arr.dtype})."
            )
        if arr.dtype.kind == "u" and arr.size:
            if int(arr.max()) > _INT64_MAX:
                raise ValueError(
                    f"`inputs` holds token id {int(arr.max())}, beyond any vocabulary."
                )
            arr = arr.astype(np.int64)
        t = torch.from_numpy(arr) if arr.size else torch.zeros(0, dtype=torch.int64)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"Token ids must be integers, got dtype {t.dtype}.")
    if t.ndim == 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 1:
        raise ValueError(
            f"Token ids must have shape (L,) or (1, L), got shape {tuple(t.shape)}: pass "
            "one sequence at a time."
        )
    return t.to(torch.int64)


def encode(inputs, tokenizer=None, *, add_special_tokens: bool = True) -> Encoded:
    """Tokenize a text, or take token ids as they are.

    Parameters
    ----------
    inputs : str, sequence of int, numpy.ndarray or torch.Tensor of shape (L,) or (1, L)
        A text (needs ``tokenizer``) or token ids.
    tokenizer : transformers tokenizer, optional
    add_special_tokens : bool, default True
        Passed to the tokenizer for text input (e.g. a BOS token for Llama).

    Returns
    -------
    Encoded

    Raises
    ------
    ValueError
        Empty text, text without a tokenizer, no ids, or fewer than 2 tokens (ESS
        needs a split).

    Examples
    --------
    >>> encode([3, 1, 4]).ids
    tensor([3, 1, 4])
    """
    if isinstance(inputs, str):
        if tokenizer is None:
            raise ValueError(
                "A text input needs a tokenizer, and this model handle has none. Load the "
                "model with one (ess_widgets.load(model, tokenizer=...)) or pass token "
                "ids instead of text."
            )
        if not inputs:
            raise ValueError("The text is empty: pass at least two tokens of text.")
        ids = tokenizer(inputs, add_special_tokens=add_special_tokens)["input_ids"]
        ids = _ids_tensor(ids)
    else:
        ids = _ids_tensor(inputs)
    if ids.numel() == 0:
        raise ValueError("The input has no tokens: pass at least two.")
    if bool((ids < 0).any()):
        raise ValueError(f"Token ids must be >= 0, got {int(ids.min())}.")
    tokens, raw = token_strings(ids.tolist(), tokenizer)
    if len(tokens) < 2:
        raise ValueError(
            f"The input has {len(tokens)} token ({list(tokens)!r}); ESS needs at least 2 "
            "tokens to have a split. Pass a longer input."
        )
    return Encoded(ids=ids, tokens=tokens, raw_tokens=raw)
