"""Small shared helpers of the views: arrays in, plain Python values and labels out."""

from __future__ import annotations

import math

import numpy as np

# Shown in place of invisible characters, so that a space or a newline token is visible.
VISIBLE_WHITESPACE = {" ": "·", "\n": "⏎", "\r": "↵", "\t": "→"}
# Other control characters (NUL, ESC, DEL, ...) become their Unicode "control picture"
# (U+2400 + code, U+2421 for DEL): never written raw into HTML, JSON or SVG.
_CONTROL_PICTURES = {c: chr(0x2400 + c) for c in range(0x20)} | {0x7F: "\u2421"}
_SHOW_CONTROLS = {k: v for k, v in _CONTROL_PICTURES.items() if k not in (9, 10)}

SPLIT_TITLE = "split i (state right after token i-1)"


def to_numpy(x, name: str, *, ndim: tuple[int, ...] | None = None) -> np.ndarray:
    """``x`` (numpy, torch, list) as a float64 numpy array, checking its rank.

    A tensor is read through ``.detach().cpu().numpy()`` when it has those methods.
    """
    if hasattr(x, "detach"):
        x = x.detach()
    if hasattr(x, "cpu"):
        x = x.cpu()
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"`{name}` must be a numeric array (numpy, torch or list), got {type(x).__name__}."
        ) from None
    if ndim is not None and a.ndim not in ndim:
        shapes = " or ".join(f"{d}-D" for d in ndim)
        raise ValueError(f"`{name}` must be {shapes}, got shape {a.shape}.")
    return a


def format_number(x: float) -> str:
    """Compact number for labels: ``1e-3`` rather than ``0.001``; integers stay integers.

    >>> format_number(1e-3), format_number(0.25), format_number(3.0), format_number(1e-12)
    ('1e-3', '0.25', '3', '1e-12')
    """
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e6):
        mantissa, exponent = f"{x:.2e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{x:.3g}"


def tolerance_label(tol: float, relative: bool = False) -> str:
    """How a tolerance is written everywhere: the value and the mode.

    >>> tolerance_label(1e-3)
    'tol=1e-3, absolute'
    >>> tolerance_label(0.05, relative=True)
    'tol=0.05 × σ₁, relative'
    """
    if relative:
        return f"tol={format_number(tol)} × σ₁, relative"
    return f"tol={format_number(tol)}, absolute"


def display_token(token: str) -> str:
    """Token text with whitespace and control characters made visible (tooltips, labels).

    >>> display_token(" the\\n")
    '·the⏎'
    >>> display_token("a\\x00b")
    'a␀b'
    """
    return visible_text("".join(VISIBLE_WHITESPACE.get(ch, ch) for ch in str(token)))


def visible_text(text: str) -> str:
    """``text`` with control characters other than newline and tab made visible.

    Untrusted text (tokens, model names) goes through this before it is escaped
    for HTML: a NUL byte or an escape sequence is never written raw.

    >>> visible_text("a\\x00b\\nc\\x1b")
    'a␀b\\nc␛'
    """
    return str(text).translate(_SHOW_CONTROLS)


def optional_floats(values) -> list[float | None]:
    """Plain list of floats, with NaN and None turned into None (JSON ``null``)."""
    out: list[float | None] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        f = float(v)
        out.append(f if math.isfinite(f) else None)
    return out
