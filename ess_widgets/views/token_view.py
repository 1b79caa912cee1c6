"""Token-wise ESS: the text's tokens coloured by the memory held right after each.

``TokenView`` is an anywidget; its front end is ``static/token_view.js`` and
``static/token_view.css`` next to this file. ``token_view_html`` renders the same
view as static, escaped HTML for exports.

Attribution (docs/definitions.md, token attribution): token ``t`` gets the ESS at split
``t + 1``, the state right after reading it. The last token has no split after it, so no
value.

Examples
--------
>>> import numpy as np
>>> view = TokenView.from_ess(["The", " cat", ".", "\\n"], np.array([1, 2, 1]))
>>> view.values
[1.0, 2.0, 1.0, None]
>>> view.delimiters
[2, 3]
"""

from __future__ import annotations

import html
import math
import pathlib
import re

import anywidget
import traitlets

from ._format import display_token, format_number, optional_floats, to_numpy, visible_text

__all__ = [
    "TokenView",
    "find_delimiters",
    "delimiter_kind",
    "token_values",
    "token_view_html",
    "token_color",
    "COLOR_STOPS",
]

_STATIC = pathlib.Path(__file__).parent / "static"

# Sequential colour scale (ColorBrewer YlGnBu), low ESS light, high ESS dark. The same
# stops are in static/token_view.js (a test keeps the two equal).
COLOR_STOPS = (
    "#ffffd9",
    "#edf8b1",
    "#c7e9b4",
    "#7fcdbb",
    "#41b6c4",
    "#1d91c0",
    "#225ea8",
    "#253494",
    "#081d58",
)
NULL_COLOR = "#e0e0e0"

# Special tokens that end a turn, a document or a segment: <|im_end|>, <|endoftext|>,
# <|eot_id|>, </s>, <s>, <eos>, <end_of_turn>, [SEP], ...
_SPECIAL = re.compile(
    r"^\s*(?:<\|[^<>|]{1,40}\|>|</?s>|<(?:eos|bos|pad|sep|cls|unk|end_of_turn|start_of_turn)>"
    r"|\[(?:SEP|CLS|EOS|BOS|PAD)\])\s*$",
    re.IGNORECASE,
)
# A token made only of sentence-ending punctuation (and closing quotes or brackets).
_SENTENCE_END = re.compile(r"^[.!?。！？…]+[\"'’”»)\]]*$")
# Markers tokenizers use for a space in raw token strings (GPT-2 byte level, sentencepiece).
_SPACE_MARKERS = "Ġ▁"


def delimiter_kind(token: str) -> str | None:
    """``"special"``, ``"newline"``, ``"sentence_end"`` or ``None`` for one token.

    Newlines are found in decoded text (``"\\n"``) and in raw byte-level or
    sentencepiece tokens (``"Ċ"``, ``"<0x0A>"``).

    >>> [delimiter_kind(t) for t in ["<|im_end|>", ".\\n", " .", "Hello", "</s>", "?)"]]
    ['special', 'newline', 'sentence_end', None, 'special', 'sentence_end']
    """
    token = str(token)
    if _SPECIAL.match(token):
        return "special"
    if "\n" in token or "\r" in token or "Ċ" in token or "<0x0A>" in token:
        return "newline"
    if _SENTENCE_END.match(token.strip().strip(_SPACE_MARKERS)):
        return "sentence_end"
    return None


def find_delimiters(
    tokens, *, kinds: tuple[str, ...] = ("special", "newline", "sentence_end")
) -> list[int]:
    """Indices of context delimiters: special end-of-turn tokens, newlines, sentence ends.

    The paper reports that ESS drops at such tokens ("state modulation").

    >>> find_delimiters(["Hi", ".", " How", "?", "<|im_end|>", "\\n"])
    [1, 3, 4, 5]
    >>> find_delimiters(["Hi", ".", "\\n"], kinds=("newline",))
    [2]
    """
    return [k for k, tok in enumerate(tokens) if delimiter_kind(tok) in kinds]


def token_values(ess, n_tokens: int) -> list[float | None]:
    """Per-token values from per-split ESS: token ``t`` gets split ``t + 1``; the last none.

    ``ess`` has shape ``(L-1,)`` for ``L = n_tokens`` tokens.

    >>> token_values([3.0, 2.0], 3)
    [3.0, 2.0, None]
    """
    e = to_numpy(ess, "ess", ndim=(1,))
    if len(e) != n_tokens - 1:
        raise ValueError(
            f"`ess` must have one value per split, L-1 = {n_tokens - 1} for {n_tokens} "
            f"tokens, got {len(e)}. Pass ESS of shape (L-1,), e.g. tolerance_ess(spectra)."
        )
    return [*optional_floats(e), None]


def token_color(value: float | None, vmax: float) -> str:
    """Background colour of a value on ``[0, vmax]`` (same rule as the JS front end)."""
    if value is None or not math.isfinite(value):
        return NULL_COLOR
    x = min(max(value / vmax, 0.0), 1.0) if vmax > 0 else 0.0
    pos = x * (len(COLOR_STOPS) - 1)
    k = min(int(pos), len(COLOR_STOPS) - 2)
    a, b = _rgb(COLOR_STOPS[k]), _rgb(COLOR_STOPS[k + 1])
    f = pos - k
    return "#" + "".join(f"{round(u + (v - u) * f):02x}" for u, v in zip(a, b))


def _text_color(background: str) -> str:
    r, g, b = (c / 255 for c in _rgb(background))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#111111" if luminance > 0.45 else "#ffffff"


def _rgb(hex_color: str) -> tuple[int, int, int]:
    h = hex_color.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


class _OptionalFloats(traitlets.List):
    """List of float-or-None; numpy/torch arrays and NaN (-> None) are accepted."""

    def __init__(self, **kwargs):
        super().__init__(traitlets.Float(allow_none=True), **kwargs)

    def validate(self, obj, value):
        if value is not None and not isinstance(value, (list, tuple)):
            if hasattr(value, "detach"):
                value = value.detach().cpu()
            value = value.tolist() if hasattr(value, "tolist") else list(value)
        if value is not None:
            value = optional_floats(value)
        return super().validate(obj, value)


class TokenView(anywidget.AnyWidget):
    """Tokens coloured by ESS; hover shows the values, a click selects the split.

    Parameters (all traitlets, synced with the browser)
    ----------
    tokens : list of str
        The text's tokens, shown with whitespace made visible (``·``, ``⏎``).
        Token text is untrusted: the front end only ever sets it as text.
    values : list of float or None
        One value per token (``TokenView.from_ess`` maps per-split ESS to tokens);
        ``None`` where there is none (the last token).
    value_label : str
        What the values are, e.g. ``"tolerance-ESS (tol=1e-3, absolute)"``.
    selected : int
        The selected split ``i`` (``-1``: none). Clicking token ``t`` selects split
        ``t + 1``; it is highlighted on token ``i - 1``.
    delimiters : list of int
        Token indices drawn with an emphasis (see ``find_delimiters``).
    vmax : float or None
        Top of the colour scale (``None``: the largest value). Fix it, e.g. to the
        TSS, to compare colours across tolerances.
    error : str
        When not empty, shown as a message instead of the tokens.
    """

    _esm = _STATIC / "token_view.js"
    _css = _STATIC / "token_view.css"

    tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)
    values = _OptionalFloats().tag(sync=True)
    value_label = traitlets.Unicode("ESS").tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    delimiters = traitlets.List(traitlets.Int()).tag(sync=True)
    vmax = traitlets.Float(None, allow_none=True).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, tokens=(), values=None, **kwargs) -> None:
        tokens = [str(t) for t in tokens]
        if values is None:
            values = [None] * len(tokens)
        super().__init__(tokens=tokens, values=values, **kwargs)

    @classmethod
    def from_ess(
        cls,
        tokens,
        ess,
        *,
        value_label: str = "ESS",
        delimiters=None,
        vmax: float | None = None,
        selected: int = -1,
        **kwargs,
    ) -> TokenView:
        """A view from ``L`` tokens and ESS at the ``L-1`` splits (token t gets split t+1).

        ``delimiters`` defaults to ``find_delimiters(tokens)``.
        """
        tokens = [str(t) for t in tokens]
        return cls(
            tokens,
            token_values(ess, len(tokens)),
            value_label=value_label,
            delimiters=find_delimiters(tokens) if delimiters is None else list(delimiters),
            vmax=vmax,
            selected=selected,
            **kwargs,
        )

    def update_ess(self, ess, *, tokens=None, value_label=None, vmax=None) -> None:
        """Show new per-split ESS (and optionally new tokens) in one synced update."""
        tokens = self.tokens if tokens is None else [str(t) for t in tokens]
        values = token_values(ess, len(tokens))
        with self.hold_sync():
            if tokens != self.tokens:
                self.selected = -1
                self.delimiters = find_delimiters(tokens)
                self.tokens = tokens
            self.values = values
            if value_label is not None:
                self.value_label = value_label
            if vmax is not None:
                self.vmax = vmax
            self.error = ""

    @traitlets.validate("selected")
    def _check_selected(self, proposal):
        value = proposal["value"]
        if value < -1:
            raise traitlets.TraitError(
                f"`selected` is a split index >= 1, or -1 for none; got {value}."
            )
        return value

    @traitlets.validate("vmax")
    def _check_vmax(self, proposal):
        value = proposal["value"]
        if value is not None and not (math.isfinite(value) and value > 0):
            raise traitlets.TraitError(f"`vmax` must be a finite number > 0 or None, got {value}.")
        return value

    def to_html(self) -> str:
        """This view as static, escaped HTML (see ``token_view_html``)."""
        return token_view_html(
            self.tokens,
            self.values,
            value_label=self.value_label,
            selected=self.selected,
            delimiters=self.delimiters,
            vmax=self.vmax,
            error=self.error,
        )


def token_view_html(
    tokens,
    values=None,
    *,
    value_label: str = "ESS",
    selected: int = -1,
    delimiters=(),
    vmax: float | None = None,
    error: str = "",
) -> str:
    """Static HTML of the token view: same classes and colours as the widget, no script.

    Every piece of token text is escaped with ``html.escape``; hovering a token shows
    its index and value through the ``title`` attribute. Style it with
    ``static/token_view.css`` (``export_html`` inlines it).

    >>> '<img' in token_view_html(["<img src=x>"], [None])
    False
    """

    def esc(text) -> str:  # untrusted text: no raw control characters, then escaped
        return html.escape(visible_text(text))

    if error:
        message = f'<div class="essw-error" role="alert">{esc(error)}</div>'
        return f'<div class="essw-token-view">{message}</div>'
    tokens = [str(t) for t in tokens]
    values = optional_floats(values) if values is not None else [None] * len(tokens)
    if len(values) != len(tokens):
        raise ValueError(f"`values` has {len(values)} entries for {len(tokens)} tokens.")
    finite = [v for v in values if v is not None]
    top = vmax if vmax else max(finite, default=0.0) or 1.0
    delims = set(delimiters)
    gradient = ", ".join(COLOR_STOPS)
    parts = [
        '<div class="essw-token-view">',
        '<div class="essw-legend">',
        f'<span class="essw-label">{esc(value_label)}</span>',
        '<span class="essw-scale"><span class="essw-min">0</span>',
        f'<span class="essw-bar" style="background: linear-gradient(to right, {gradient})"></span>',
        f'<span class="essw-max">{esc(format_number(top))}</span></span>',
        f'<span class="essw-null"><span class="essw-swatch" style="background: {NULL_COLOR}">'
        "</span>no value (last token)</span>",
    ]
    if delims:
        parts.append(
            '<span class="essw-delim-key"><span class="essw-delim">⏐</span>delimiter</span>'
        )
    parts.append("</div>")
    parts.append(f'<div class="essw-tokens" role="group" aria-label="{esc(value_label)}">')
    for k, (tok, v) in enumerate(zip(tokens, values)):
        bg = token_color(v, top)
        classes = ["essw-token"]
        if k in delims:
            classes.append("essw-delim")
        if selected >= 1 and k == selected - 1:
            classes.append("essw-selected")
        shown = display_token(tok) or "∅"
        value_text = "none (no split after the last token)" if v is None else format_number(v)
        title = f"token {k}: {tok!r}\n{value_label}: {value_text}"
        if v is not None:
            title += f" (split i={k + 1})"
        parts.append(
            f'<span class="{" ".join(classes)}" data-index="{k}" '
            f'style="background-color: {bg}; color: {_text_color(bg)}" '
            f'title="{esc(title)}">{esc(shown)}</span>'
        )
        if "\n" in tok:
            parts.append("<br>")
    parts.append("</div></div>")
    return "".join(parts)
