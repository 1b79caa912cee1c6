"""Altair charts of ESS: pure functions from arrays to declarative charts.

Every builder takes data the caller already has (numpy or torch arrays, token
strings), returns an ``altair`` chart, and computes nothing expensive: the
explorer re-thresholds cached spectra and rebuilds these charts on every change.
The ``*_frame`` helpers return the exact table a chart shows, so the shown values
can be compared with ``tolerance_ess`` / ``entropy_ess``.

Conventions (see docs/definitions.md): ``spectra`` rows are splits ``i = 1 .. L-1``;
split ``i`` is the memory right after token ``i-1``. The charts take numpy arrays (torch
tensors are read through ``.numpy()``); the tolerance-ESS they show is ``ess_widgets.core``'s.

Examples
--------
>>> import numpy as np
>>> chart = spectrum_chart(np.array([3.0, 1.0, 1e-9]), tol=1e-6, split=4)
>>> chart.to_dict()["title"]["text"]
'Singular values of T[i:, :i] at split i=4'
>>> ess_frame(np.array([1, 2, 1]), np.array([1.0, 1.5, 1.0]))["series"].unique().tolist()
['tolerance-ESS', 'entropy-ESS', 'bound min(i, L-i)']
"""

from __future__ import annotations

import json

import altair as alt
import numpy as np
import pandas as pd

from ..core import tolerance_ess as _tolerance_ess
from ..core import tolerance_mask as _tolerance_mask
from ..core import tolerance_threshold as _tolerance_threshold
from ._format import SPLIT_TITLE, display_token, format_number, to_numpy, tolerance_label

__all__ = [
    "spectrum_chart",
    "ess_curve_chart",
    "tolerance_vs_entropy_chart",
    "operator_heatmap",
    "overview_chart",
    "spectrum_frame",
    "ess_frame",
    "channel_frame",
    "tolerance_threshold",
    "chart_data",
    "enable_offline",
]

WIDTH = 420
HEIGHT = 240
ESS_AXIS = "ESS (state dimensions)"

TOLERANCE_SERIES = "tolerance-ESS"
ENTROPY_SERIES = "entropy-ESS"
BOUND_SERIES = "bound min(i, L-i)"
TSS_SERIES = "TSS"
# colour and dash per series kind: ESS solid, reference lines dashed.
_SERIES_STYLE = {
    TOLERANCE_SERIES: ("#1f77b4", [1, 0]),
    ENTROPY_SERIES: ("#e6550d", [1, 0]),
    BOUND_SERIES: ("#7f7f7f", [6, 4]),
    TSS_SERIES: ("#2ca02c", [2, 3]),
}
SELECTION_COLOR = "#d62728"


def enable_offline() -> None:
    """Draw charts in Jupyter without a CDN: vega libraries inlined by vl-convert.

    Calls ``alt.JupyterChart.enable_offline()`` and makes the ``jupyter`` renderer
    (JupyterChart, offline) the default for displaying a chart. Call it before
    creating charts.
    """
    alt.JupyterChart.enable_offline()
    alt.renderers.enable("jupyter", offline=True)


# ----------------------------------------------------------------------------- frames
def tolerance_threshold(singular_values, tol: float, relative: bool = False) -> float:
    """The cut a singular value must exceed: ``tol``, or ``tol * sigma_1`` when relative."""
    s = to_numpy(singular_values, "singular_values", ndim=(1,))
    return float(_tolerance_threshold(s[None], tol, relative=relative)[0])


def spectrum_frame(singular_values, *, tol: float, relative: bool = False) -> pd.DataFrame:
    """The points of ``spectrum_chart``: one row per non-zero singular value.

    Columns: ``rank`` (1 = largest), ``sigma``, ``above`` (counted by tolerance-ESS).
    Zeros (the padding of ``spectra`` past ``min(i, L-i)``) are dropped.
    """
    s = np.sort(to_numpy(singular_values, "singular_values", ndim=(1,)))[::-1]
    _check_nonnegative(s, "singular_values")
    above = _tolerance_mask(s[None], tol, relative=relative)[0]
    keep = s > 0
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(s) + 1)[keep],
            "sigma": s[keep],
            "above": above[keep],
        }
    )


def ess_frame(
    tolerance_ess=None,
    entropy_ess=None,
    *,
    bound=None,
    tss=None,
    tokens=None,
    tol: float | None = None,
    relative: bool = False,
) -> pd.DataFrame:
    """Long table of ESS along the sequence: the data of ``ess_curve_chart``.

    Parameters
    ----------
    tolerance_ess, entropy_ess : array of shape (L-1,), optional
        ESS at splits ``i = 1 .. L-1`` (at least one of them).
    bound : None, False or array of shape (L-1,)
        ``None`` adds ``min(i, L-i)``; ``False`` leaves it out.
    tss : None, number or array of shape (L-1,)
        True state size, constant or per split (softmax attention: ``i``).
    tokens : sequence of str, optional
        The ``L`` tokens; row ``split`` gets ``tokens[split - 1]``, the token just read.
    tol, relative : optional
        Written into the tolerance-ESS series name when given.

    Returns
    -------
    pandas.DataFrame with columns ``split``, ``token``, ``series``, ``ESS``.
    """
    series: dict[str, np.ndarray] = {}
    tol_name = TOLERANCE_SERIES
    if tol is not None:
        tol_name = f"{TOLERANCE_SERIES} ({tolerance_label(tol, relative)})"
    for name, arr, argname in (
        (tol_name, tolerance_ess, "tolerance_ess"),
        (ENTROPY_SERIES, entropy_ess, "entropy_ess"),
    ):
        if arr is not None:
            series[name] = to_numpy(arr, argname, ndim=(1,))
    if not series:
        raise ValueError("Pass `tolerance_ess`, `entropy_ess` or both (arrays of shape (L-1,)).")
    n = _common_length(series)
    splits = np.arange(1, n + 1)
    if bound is None:
        series[BOUND_SERIES] = np.minimum(splits, n + 1 - splits).astype(np.float64)
    elif bound is not False:
        series[BOUND_SERIES] = to_numpy(bound, "bound", ndim=(1,))
    if tss is not None:
        t = to_numpy(tss, "tss", ndim=(0, 1))
        series[TSS_SERIES] = np.broadcast_to(t, (n,)).astype(np.float64)
    _common_length(series)
    token_text = _split_tokens(tokens, n)
    frames = [
        pd.DataFrame({"split": splits, "token": token_text, "series": name, "ESS": values})
        for name, values in series.items()
    ]
    frame = pd.concat(frames, ignore_index=True)
    return frame[np.isfinite(frame["ESS"].to_numpy())].reset_index(drop=True)


def channel_frame(tolerance_ess, entropy_ess, *, channel_name: str = "head") -> pd.DataFrame:
    """Wide table, one row per (channel, split): the data of ``tolerance_vs_entropy_chart``.

    ``tolerance_ess`` and ``entropy_ess`` have shape ``(C, L-1)`` (or ``(L-1,)`` for
    one channel). Columns: ``channel_name``, ``split``, ``tolerance_ESS``, ``entropy_ESS``.
    Splits whose values are NaN (not computed yet) are left out.
    """
    tol_ess = to_numpy(tolerance_ess, "tolerance_ess", ndim=(1, 2))
    ent_ess = to_numpy(entropy_ess, "entropy_ess", ndim=(1, 2))
    tol_ess, ent_ess = np.atleast_2d(tol_ess), np.atleast_2d(ent_ess)
    if tol_ess.shape != ent_ess.shape:
        raise ValueError(
            "`tolerance_ess` and `entropy_ess` must have the same shape (C, L-1), got "
            f"{tol_ess.shape} and {ent_ess.shape}."
        )
    c, n = tol_ess.shape
    frame = pd.DataFrame(
        {
            channel_name: np.repeat(np.arange(c), n),
            "split": np.tile(np.arange(1, n + 1), c),
            "tolerance_ESS": tol_ess.ravel(),
            "entropy_ESS": ent_ess.ravel(),
        }
    )
    # NaN marks a split not computed yet (a progressive view): no point for it.
    keep = np.isfinite(frame["tolerance_ESS"].to_numpy()) & np.isfinite(
        frame["entropy_ESS"].to_numpy()
    )
    return frame if keep.all() else frame[keep].reset_index(drop=True)


# ----------------------------------------------------------------------------- charts
def spectrum_chart(
    singular_values,
    *,
    tol: float,
    relative: bool = False,
    split: int | None = None,
    title: str | None = None,
) -> alt.LayerChart:
    """Singular values of ``T[i:, :i]`` at one split on a log axis, with the tolerance.

    The count of values strictly above the threshold (``tol``, or ``tol * sigma_1``
    when ``relative``) is the tolerance-ESS at that split; it is written in the
    subtitle. Zero values (padding) cannot sit on a log axis and are left out.

    Parameters
    ----------
    singular_values : array of shape (K,)
        One row of ``spectra(T)``: row ``i-1`` for split ``i``.
    tol : float
        The tolerance, >= 0.
    relative : bool, default False
        Threshold at ``tol * sigma_1`` instead of ``tol``.
    split : int, optional
        The split ``i``, for the title.
    title : str, optional
        Replaces the default title.
    """
    s = to_numpy(singular_values, "singular_values", ndim=(1,))
    _check_nonnegative(s, "singular_values")
    frame = spectrum_frame(s, tol=tol, relative=relative)
    count = int(_tolerance_ess(s[None], tol, relative=relative)[0])
    threshold = tolerance_threshold(s, tol, relative)
    where = f" at split i={split}" if split is not None else ""
    subtitle = [
        f"{count} singular value{'s' if count != 1 else ''} above the threshold "
        f"{format_number(threshold)} ({tolerance_label(tol, relative)})"
        f" → tolerance-ESS = {count}",
    ]
    if frame.empty:
        subtitle.append("all singular values are zero: nothing crosses this split")
    chart_title = alt.Title(title or f"Singular values of T[i:, :i]{where}", subtitle=subtitle)
    y_title = "singular value σ_k (log scale)"
    n_shown = max(len(frame), 2)
    base = _chart(frame).encode(
        x=alt.X(
            "rank:Q",
            title="rank k (1 = largest singular value)",
            scale=alt.Scale(domain=[1, n_shown], nice=False),
            axis=alt.Axis(tickMinStep=1, format="d"),
        ),
        y=alt.Y("sigma:Q", title=y_title, scale=alt.Scale(type="log"), axis=alt.Axis(format="~e")),
    )
    tooltip = [
        alt.Tooltip("rank:Q", title="rank k"),
        alt.Tooltip("sigma:Q", title="σ_k", format=".4g"),
        alt.Tooltip("above:N", title="above threshold"),
    ]
    layers = [
        base.mark_line(color="#9ecae1", strokeWidth=1),
        base.mark_point(filled=True, size=45).encode(
            color=alt.Color(
                "above:N",
                title="σ_k > threshold",
                scale=alt.Scale(domain=[True, False], range=["#1f77b4", "#bdbdbd"]),
                legend=alt.Legend(labelExpr="datum.value ? 'yes: counted' : 'no: not counted'"),
            ),
            tooltip=tooltip,
        ),
    ]
    if threshold > 0:
        rule_data = pd.DataFrame(
            {
                "threshold": [threshold],
                "label": [f"threshold {format_number(threshold)}"],
                "mode": [tolerance_label(tol, relative)],
            }
        )
        rule = _chart(rule_data).encode(y=alt.Y("threshold:Q", title=y_title))
        layers.append(
            rule.mark_rule(color=SELECTION_COLOR, strokeDash=[6, 4], strokeWidth=1.5).encode(
                tooltip=[
                    alt.Tooltip("threshold:Q", format=".4g"),
                    alt.Tooltip("mode:N", title="tolerance"),
                ]
            )
        )
        layers.append(
            rule.mark_text(
                align="right", baseline="bottom", dx=-2, dy=-3, color=SELECTION_COLOR
            ).encode(x=alt.datum(n_shown), text="label:N")
        )
    return alt.layer(*layers, title=chart_title).properties(width=WIDTH, height=HEIGHT)


def ess_curve_chart(
    tolerance_ess=None,
    entropy_ess=None,
    *,
    bound=None,
    tss=None,
    split: int | None = None,
    tokens=None,
    tol: float | None = None,
    relative: bool = False,
    title: str | None = None,
) -> alt.LayerChart:
    """Tolerance-ESS and entropy-ESS along the sequence, with the bound and the TSS.

    x is the split ``i = 1 .. L-1`` (the state right after token ``i-1``); the bound
    ``min(i, L-i)`` and the TSS are dashed; ``split`` draws a vertical rule. The
    tooltip shows the token just read. Arguments as in ``ess_frame``.
    """
    frame = ess_frame(
        tolerance_ess,
        entropy_ess,
        bound=bound,
        tss=tss,
        tokens=tokens,
        tol=tol,
        relative=relative,
    )
    n = int(frame["split"].max())
    names = list(dict.fromkeys(frame["series"]))
    colors = [_SERIES_STYLE[_series_kind(name)][0] for name in names]
    dashes = [_SERIES_STYLE[_series_kind(name)][1] for name in names]
    subtitle = "ESS per split; dashed: upper bounds"
    if tol is not None:
        subtitle += f"; tolerance-ESS with {tolerance_label(tol, relative)}"
    base = _chart(frame).encode(
        x=alt.X(
            "split:Q",
            title=SPLIT_TITLE,
            scale=alt.Scale(domain=[1, max(n, 2)], nice=False),
            axis=alt.Axis(tickMinStep=1, format="d"),
        ),
        y=alt.Y("ESS:Q", title=ESS_AXIS),
        color=alt.Color(
            "series:N",
            title=None,
            sort=names,
            scale=alt.Scale(domain=names, range=colors),
            legend=alt.Legend(
                orient="bottom", columns=2, labelLimit=320, symbolType="stroke", symbolStrokeWidth=2
            ),
        ),
    )
    # Nearest split under the pointer: its points appear and carry the tooltip.
    hover = alt.selection_point(
        fields=["split"], nearest=True, on="pointerover", clear="pointerout", empty=False
    )
    layers = [
        base.mark_line(strokeWidth=2).encode(
            strokeDash=alt.StrokeDash(
                "series:N", sort=names, scale=alt.Scale(domain=names, range=dashes)
            )
        ),
        base.mark_point(filled=True, size=40)
        .encode(
            opacity=alt.condition(hover, alt.value(1), alt.value(0)),
            tooltip=[
                alt.Tooltip("split:Q", title="split i"),
                alt.Tooltip("token:N", title="token i-1 (just read)"),
                alt.Tooltip("series:N"),
                alt.Tooltip("ESS:Q", format=".3~f"),
            ],
        )
        .add_params(hover),
    ]
    if split is not None:
        layers += _split_rule(split, n, tokens, x_title=SPLIT_TITLE)
    chart_title = alt.Title(title or "Effective state-size along the sequence", subtitle=subtitle)
    return alt.layer(*layers, title=chart_title).properties(width=WIDTH, height=HEIGHT)


def tolerance_vs_entropy_chart(
    tolerance_ess,
    entropy_ess,
    *,
    tol: float | None = None,
    relative: bool = False,
    split: int | None = None,
    channel_name: str = "head",
    title: str | None = None,
) -> alt.LayerChart:
    """Tolerance-ESS against entropy-ESS: one point per split and head (or channel).

    ``tolerance_ess`` and ``entropy_ess`` have shape ``(C, L-1)``. The diagonal
    ``y = x`` is drawn: points above it count more directions than the entropy
    measure weighs (the tolerance is loose), points below fewer. ``split`` rings
    the points of that split.
    """
    frame = channel_frame(tolerance_ess, entropy_ess, channel_name=channel_name)
    n_channels = int(frame[channel_name].max()) + 1 if len(frame) else 0
    top = float(np.nanmax(frame[["tolerance_ESS", "entropy_ESS"]].to_numpy(), initial=1.0))
    top *= 1.05  # room for the points on the edge
    tol_axis = "tolerance-ESS (state dimensions)"
    if tol is not None:
        tol_axis = f"tolerance-ESS ({tolerance_label(tol, relative)})"
    x = alt.X(
        "entropy_ESS:Q",
        title="entropy-ESS (state dimensions, no tolerance)",
        scale=alt.Scale(domain=[0, top]),
    )
    y = alt.Y("tolerance_ESS:Q", title=tol_axis, scale=alt.Scale(domain=[0, top]))
    if n_channels <= 20:
        color = alt.Color(f"{channel_name}:N", title=channel_name, legend=alt.Legend(columns=2))
    else:
        color = alt.value("#1f77b4")
    tooltip = [
        alt.Tooltip(f"{channel_name}:N"),
        alt.Tooltip("split:Q", title="split i"),
        alt.Tooltip("tolerance_ESS:Q", title="tolerance-ESS", format=".3~f"),
        alt.Tooltip("entropy_ESS:Q", title="entropy-ESS", format=".3~f"),
    ]
    diagonal = _chart(pd.DataFrame({"entropy_ESS": [0.0, top], "tolerance_ESS": [0.0, top]}))
    points = _chart(frame)
    layers = [
        diagonal.mark_line(color="#7f7f7f", strokeDash=[4, 4]).encode(x=x, y=y),
        points.mark_circle(size=28, opacity=0.55).encode(x=x, y=y, color=color, tooltip=tooltip),
    ]
    if split is not None:
        layers.append(
            points.transform_filter(alt.datum.split == int(split))
            .mark_point(size=90, color=SELECTION_COLOR, strokeWidth=2)
            .encode(x=x, y=y, tooltip=tooltip)
        )
    subtitle = f"one point per split and {channel_name}; dashed: y = x"
    if split is not None:
        subtitle += f"; ringed: split i={int(split)}"
    chart_title = alt.Title(title or "Tolerance-ESS against entropy-ESS", subtitle=subtitle)
    return alt.layer(*layers, title=chart_title).properties(width=HEIGHT + 60, height=HEIGHT + 60)


def operator_heatmap(
    T,
    *,
    split: int | None = None,
    tokens=None,
    scale: str = "linear",
    title: str | None = None,
    max_side: int = 192,
) -> alt.LayerChart:
    """The operator ``T`` (L, L) as a heatmap, rows outputs and columns inputs.

    Only the causal part ``j <= i`` is drawn. With ``split = i`` the block
    ``T[i:, :i]`` (rows ``i .. L-1``, columns ``0 .. i-1``) is outlined. Signed
    operators get a diverging colour scale centred at 0. ``scale`` is an altair
    colour scale type ("linear", "symlog", ...). Longer than ``max_side`` tokens,
    each cell is the mean of a ``b x b`` block of ``T`` (``b = ceil(L / max_side)``),
    so that the chart stays small; the outline stays exact.
    """
    t = to_numpy(T, "T", ndim=(2,))
    L = t.shape[0]
    if t.shape != (L, L) or L < 2:
        raise ValueError(f"`T` must be square (L, L) with L >= 2, got shape {t.shape}.")
    if split is not None and not 1 <= int(split) <= L - 1:
        raise ValueError(f"`split` must be in 1 .. L-1 = {L - 1}, got {split}.")
    token_text = [display_token(tok) for tok in tokens] if tokens is not None else None
    if token_text is not None and len(token_text) != L:
        raise ValueError(f"`tokens` must have L = {L} entries, got {len(token_text)}.")
    b = -(-L // max(int(max_side), 1))  # cells per block side
    if b > 1:
        return _binned_heatmap(t, b, split=split, scale=scale, title=title)
    rows, cols = np.tril_indices(L)
    values = t[rows, cols]
    color_scale = _weight_scale(values, scale)
    edge = dict(nice=False, zero=False, domain=[-0.5, L - 0.5])
    cells = _chart(pd.DataFrame({"output": rows, "input": cols, "weight": values}))
    cells = cells.transform_calculate(
        x0="datum.input - 0.5",
        x1="datum.input + 0.5",
        y0="datum.output - 0.5",
        y1="datum.output + 0.5",
    )
    tooltip = [
        alt.Tooltip("output:Q", title="output position (row)"),
        alt.Tooltip("input:Q", title="input position (column)"),
        alt.Tooltip("weight:Q", title="T[row, column]", format=".4g"),
    ]
    if token_text is not None:
        lookup = alt.InlineData(
            values=json.dumps([{"pos": k, "tok": s} for k, s in enumerate(token_text)]),
            format=alt.DataFormat(type="json"),
        )
        cells = cells.transform_lookup(
            lookup="output", from_=alt.LookupData(lookup, "pos", ["tok"]), as_=["output_token"]
        ).transform_lookup(
            lookup="input", from_=alt.LookupData(lookup, "pos", ["tok"]), as_=["input_token"]
        )
        tooltip[1:1] = [alt.Tooltip("output_token:N", title="output token")]
        tooltip.insert(3, alt.Tooltip("input_token:N", title="input token"))
    x = alt.X("x0:Q", title="input position (column)", scale=alt.Scale(**edge))
    y = alt.Y("y0:Q", title="output position (row)", scale=alt.Scale(reverse=True, **edge))
    layers = [
        cells.mark_rect().encode(
            x=x,
            x2="x1:Q",
            y=y,
            y2="y1:Q",
            color=alt.Color("weight:Q", title="T[i, j]", scale=color_scale),
            tooltip=tooltip,
        )
    ]
    subtitle = "causal part j ≤ i; rows: outputs, columns: inputs"
    if split is not None:
        i = int(split)
        layers.append(_outline(i, L, x, y))
        subtitle += f"; outlined: the block T[i:, :i] at split i={i} ({L - i} × {i})"
    chart_title = alt.Title(title or "Operator T", subtitle=subtitle)
    return alt.layer(*layers, title=chart_title).properties(width=HEIGHT + 80, height=HEIGHT + 80)


def _block_means(t: np.ndarray, b: int) -> np.ndarray:
    """Mean of every ``b x b`` block of the causal part of ``t`` (``(n, n)``, ``n = ceil(L/b)``)."""
    L = t.shape[0]
    n = -(-L // b)
    padded = np.zeros((n * b, n * b))
    padded[:L, :L] = np.tril(t)
    counts = np.zeros((n * b, n * b))
    counts[:L, :L] = np.tri(L)
    sums = padded.reshape(n, b, n, b).sum((1, 3))
    sizes = counts.reshape(n, b, n, b).sum((1, 3))
    return np.where(sizes > 0, sums / np.where(sizes > 0, sizes, 1), 0.0)


def _weight_scale(values: np.ndarray, scale: str) -> alt.Scale:
    """Signed weights: a red-blue scale symmetric about 0; else viridis."""
    lo, hi = float(values.min()), float(values.max())
    if lo < 0:
        m = max(-lo, hi)
        return alt.Scale(type=scale, scheme="redblue", reverse=True, domain=[-m, m])
    return alt.Scale(type=scale, scheme="viridis")


def _binned_heatmap(t, b: int, *, split, scale: str, title) -> alt.LayerChart:
    L = t.shape[0]
    means = _block_means(t, b)
    rows, cols = np.tril_indices(means.shape[0])
    first_out, first_in = rows * b, cols * b
    frame = pd.DataFrame(
        {
            "output": first_out,
            "input": first_in,
            "last_output": np.minimum(first_out + b, L) - 1,
            "last_input": np.minimum(first_in + b, L) - 1,
            "weight": means[rows, cols],
        }
    )
    color_scale = _weight_scale(frame["weight"].to_numpy(), scale)
    edge = dict(nice=False, zero=False, domain=[-0.5, L - 0.5])
    x = alt.X("x0:Q", title="input position (column)", scale=alt.Scale(**edge))
    y = alt.Y("y0:Q", title="output position (row)", scale=alt.Scale(reverse=True, **edge))
    cells = _chart(frame).transform_calculate(
        x0="datum.input - 0.5",
        x1="datum.last_input + 0.5",
        y0="datum.output - 0.5",
        y1="datum.last_output + 0.5",
    )
    layers = [
        cells.mark_rect().encode(
            x=x,
            x2="x1:Q",
            y=y,
            y2="y1:Q",
            color=alt.Color("weight:Q", title=f"mean of T over {b}×{b}", scale=color_scale),
            tooltip=[
                alt.Tooltip("output:Q", title="first output row"),
                alt.Tooltip("last_output:Q", title="last output row"),
                alt.Tooltip("input:Q", title="first input column"),
                alt.Tooltip("last_input:Q", title="last input column"),
                alt.Tooltip("weight:Q", title="mean of T[i, j], j ≤ i", format=".4g"),
            ],
        )
    ]
    subtitle = f"causal part j ≤ i, mean over {b} × {b} blocks; rows: outputs, columns: inputs"
    if split is not None:
        layers.append(_outline(int(split), L, x, y))
        i = int(split)
        subtitle += f"; outlined: T[i:, :i] at split i={i} ({L - i} × {i})"
    chart_title = alt.Title(title or "Operator T", subtitle=subtitle)
    return alt.layer(*layers, title=chart_title).properties(width=HEIGHT + 80, height=HEIGHT + 80)


def _outline(i: int, L: int, x, y) -> alt.Chart:
    outline = {
        "first_output": i,
        "last_output": L - 1,
        "first_input": 0,
        "last_input": i - 1,
        "block": f"T[{i}:, :{i}], {L - i} × {i}",
    }
    return (
        _chart(pd.DataFrame([outline]))
        .transform_calculate(
            x0="datum.first_input - 0.5",
            x1="datum.last_input + 0.5",
            y0="datum.first_output - 0.5",
            y1="datum.last_output + 0.5",
        )
        .mark_rect(fill=None, stroke=SELECTION_COLOR, strokeWidth=2)
        .encode(x=x, x2="x1:Q", y=y, y2="y1:Q", tooltip=["block:N"])
    )


def overview_chart(
    table: pd.DataFrame,
    *,
    value: str | None = None,
    channel_name: str | None = None,
    title: str | None = None,
) -> alt.Chart:
    """Heatmap of average ESS per layer (rows) and head or channel (columns).

    ``table`` has columns ``layer``, ``channel`` (or ``head``) and one value
    column (mean ESS over splits); ``value`` names it when there are several.
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"`table` must be a pandas DataFrame, got {type(table).__name__}.")
    channel = "channel" if "channel" in table.columns else "head"
    if "layer" not in table.columns or channel not in table.columns:
        raise ValueError(
            f"`table` needs columns 'layer' and 'channel' (or 'head'), got {list(table.columns)}."
        )
    if value is None:
        others = [c for c in table.columns if c not in ("layer", channel)]
        if len(others) != 1:
            raise ValueError(
                f"`table` has value columns {others}; name the one to show with `value=`."
            )
        value = others[0]
    label = channel_name or channel
    frame = table[["layer", channel, value]].rename(columns={channel: label, value: "ESS"})
    return (
        _chart(frame)
        .mark_rect()
        .encode(
            x=alt.X(f"{label}:O", title=label, axis=alt.Axis(labelAngle=0)),
            y=alt.Y("layer:O", title="layer"),
            color=alt.Color("ESS:Q", title=value, scale=alt.Scale(scheme="viridis")),
            tooltip=[
                alt.Tooltip("layer:O"),
                alt.Tooltip(f"{label}:O"),
                alt.Tooltip("ESS:Q", title=value, format=".3~f"),
            ],
        )
        .properties(
            title=alt.Title(
                title or f"Average ESS per layer and {label}",
                subtitle=f"colour: {value} (mean over splits)",
            ),
            width={"step": 22},
            height={"step": 16},
        )
    )


# ----------------------------------------------------------------------------- helpers
def _chart(frame: pd.DataFrame) -> alt.Chart:
    """A chart whose data is ``frame``.

    The frame travels as one JSON string holding its columns,
    ``'[{"split": [1, 2, ...], "ESS": [...]}]'``, which vega parses and a
    ``flatten`` transform turns back into one row per entry. Altair walks and
    copies nested Python data value by value on every ``encode``/``to_dict``
    (about 30 ms per 10 000 values); a string is a single leaf, so a chart of
    thousands of points builds in milliseconds. Inline data also bypasses
    altair's 5000-row limit. ``chart_data`` reads the rows back.
    """
    columns = {name: frame[name].tolist() for name in frame.columns}
    values = json.dumps([columns], allow_nan=False, ensure_ascii=False)
    data = alt.InlineData(values=values, format=alt.DataFormat(type="json"))
    return alt.Chart(data).transform_flatten(list(columns))


def chart_data(chart) -> list[pd.DataFrame]:
    """The rows each layer of a chart built here shows, as DataFrames (for tests).

    Reads the spec back: one DataFrame per layer (one for a single chart), with
    the layer's filter transforms not applied.
    """
    spec = chart.to_dict() if hasattr(chart, "to_dict") else chart
    datasets = spec.get("datasets", {})
    frames = []
    for layer in spec.get("layer", [spec]):
        data = layer.get("data", spec.get("data"))
        values = datasets[data["name"]] if "name" in data else data["values"]
        rows = json.loads(values) if isinstance(values, str) else values
        frames.append(pd.DataFrame(rows[0]))
    return frames


def _check_nonnegative(s: np.ndarray, name: str) -> None:
    if not np.isfinite(s).all() or (s < 0).any():
        raise ValueError(f"`{name}` must be finite and >= 0 (singular values), got {s!r}.")


def _common_length(series: dict[str, np.ndarray]) -> int:
    lengths = {name: len(a) for name, a in series.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"ESS arrays must all have length L-1, got lengths {lengths}.")
    return next(iter(lengths.values()))


def _split_tokens(tokens, n: int) -> list[str]:
    """Token just read at each split ``1 .. n`` (``tokens[i-1]``), whitespace visible."""
    if tokens is None:
        return [""] * n
    tokens = list(tokens)
    if len(tokens) != n + 1:
        raise ValueError(
            f"`tokens` must have L = {n + 1} entries (one more than the {n} splits), "
            f"got {len(tokens)}."
        )
    return [display_token(tok) for tok in tokens[:-1]]


def _series_kind(name: str) -> str:
    return TOLERANCE_SERIES if name.startswith(TOLERANCE_SERIES) else name


def _split_rule(split: int, n: int, tokens, *, x_title: str) -> list[alt.Chart]:
    i = int(split)
    if not 1 <= i <= n:
        raise ValueError(f"`split` must be in 1 .. L-1 = {n}, got {split}.")
    label = f"split i={i}"
    if tokens is not None:
        label += f" (after {display_token(list(tokens)[i - 1])!r})"
    rule = _chart(pd.DataFrame({"split": [i], "label": [label]})).encode(
        x=alt.X("split:Q", title=x_title)
    )
    return [
        rule.mark_rule(color=SELECTION_COLOR, strokeWidth=1.5),
        rule.mark_text(align="left", baseline="top", dx=4, dy=2, color=SELECTION_COLOR).encode(
            y=alt.value(0), text="label:N"
        ),
    ]
