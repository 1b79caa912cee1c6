"""Altair charts of a sweep's summaries: pure functions from summary tables to charts.

Each takes the table one function of ``summaries`` returns and computes nothing
heavy. Like ``ess_widgets.views``, the charts carry their data inline and render
offline (call ``ess_widgets.views.enable_offline()`` once in a notebook).

- ``head_heatmap``: mean ESS (or ESS/TSS) per layer and head, from ``head_means``;
  clicking a cell selects it (the selection parameter ``cell``, used by
  ``CorpusExplorer``).
- ``head_distribution_chart``: every head's spread over texts, heads sorted by
  median, from ``head_distributions`` (the stratification picture).
- ``around_chart``: ESS at offsets around a token class against other tokens, with
  bootstrap intervals, from ``around_token_class``.
- ``token_class_chart``: ratio of ESS at a token class to the rest, with intervals,
  from ``token_class_ess``.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

__all__ = ["head_heatmap", "head_distribution_chart", "around_chart", "token_class_chart"]

WIDTH = 420
HEIGHT = 240
CELL_SELECTION = "cell"


def _need(table, columns, producer: str) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"Expected the DataFrame of {producer}, got {type(table).__name__}.")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"The table lacks columns {missing}: pass the result of {producer}.")
    if table.empty:
        raise ValueError(f"The table is empty: nothing to draw (from {producer}).")
    return table


def _value_title(table: pd.DataFrame, fallback: str) -> str:
    value = table.attrs.get("value", fallback)
    return {
        "entropy_ess": "entropy-ESS",
        "tolerance_ess": "tolerance-ESS",
        "entropy_ess/tss": "entropy-ESS / TSS",
        "tolerance_ess/tss": "tolerance-ESS / TSS",
        "entropy_ess/bound": "entropy-ESS / min(i, L-i)",
        "tolerance_ess/bound": "tolerance-ESS / min(i, L-i)",
    }.get(value, value)


def head_heatmap(means: pd.DataFrame, *, title: str | None = None) -> alt.Chart:
    """Mean ESS per layer (rows) and head (columns), with the interval in the tooltip.

    Parameters
    ----------
    means : pandas.DataFrame
        ``summaries.head_means(...)``: ``layer``, ``channel``, ``mean``, ``ci_low``,
        ``ci_high``, ``n_texts``.
    title : str, optional

    Returns
    -------
    altair.Chart
        A rect per (layer, channel); a click selects it (point selection named
        ``"cell"`` over ``layer`` and ``channel``).
    """
    _need(means, ["layer", "channel", "mean", "ci_low", "ci_high", "n_texts"], "head_means")
    label = _value_title(means, "ESS")
    ci = means.attrs.get("ci", 0.95)
    cell = alt.selection_point(name=CELL_SELECTION, fields=["layer", "channel"], on="click")
    data = means[["layer", "channel", "mean", "ci_low", "ci_high", "n_texts"]]
    return (
        alt.Chart(data)
        .mark_rect()
        .encode(
            x=alt.X("channel:O", title="head", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("layer:O", title="layer"),
            color=alt.Color("mean:Q", title=label, scale=alt.Scale(scheme="viridis")),
            stroke=alt.condition(cell, alt.value("#d62728"), alt.value(None)),
            strokeWidth=alt.condition(cell, alt.value(2), alt.value(0)),
            tooltip=[
                alt.Tooltip("layer:O"),
                alt.Tooltip("channel:O", title="head"),
                alt.Tooltip("mean:Q", title=f"mean {label}", format=".3~f"),
                alt.Tooltip("ci_low:Q", title=f"{ci:.0%} interval, low", format=".3~f"),
                alt.Tooltip("ci_high:Q", title=f"{ci:.0%} interval, high", format=".3~f"),
                alt.Tooltip("n_texts:Q", title="texts"),
            ],
        )
        .add_params(cell)
        .properties(
            title=alt.Title(
                title or f"Mean {label} per layer and head",
                subtitle=f"mean over each text's splits, then over texts; tooltip: "
                f"{ci:.0%} bootstrap interval over texts; click a cell for its texts",
            ),
            width={"step": 22},
            height={"step": 16},
        )
    )


def head_distribution_chart(dists: pd.DataFrame, *, title: str | None = None) -> alt.LayerChart:
    """Each head's per-text means: box q25..q75, whiskers q10..q90, median tick.

    Heads are sorted by their median along x (``rank``), coloured by layer: a
    staircase shows how unequally heads use their state.

    Parameters
    ----------
    dists : pandas.DataFrame
        ``summaries.head_distributions(...)`` with its default quantiles.
    """
    _need(
        dists,
        ["layer", "channel", "rank", "q10", "q25", "q50", "q75", "q90", "mean"],
        "head_distributions",
    )
    label = _value_title(dists, "ESS")
    data = dists[["layer", "channel", "rank", "q10", "q25", "q50", "q75", "q90", "mean"]]
    base = alt.Chart(data).encode(
        x=alt.X("rank:Q", title="heads, sorted by median (rank)", axis=alt.Axis(format="d")),
        color=alt.Color("layer:Q", title="layer", scale=alt.Scale(scheme="turbo")),
        tooltip=[
            alt.Tooltip("layer:O"),
            alt.Tooltip("channel:O", title="head"),
            alt.Tooltip("q50:Q", title="median", format=".3~f"),
            alt.Tooltip("q25:Q", format=".3~f"),
            alt.Tooltip("q75:Q", format=".3~f"),
            alt.Tooltip("mean:Q", format=".3~f"),
        ],
    )
    whiskers = base.mark_rule(opacity=0.5).encode(
        y=alt.Y("q10:Q", title=f"{label} (per-text mean)"), y2="q90:Q"
    )
    boxes = base.mark_bar(size=3).encode(y="q25:Q", y2="q75:Q")
    medians = base.mark_tick(color="black", thickness=1, size=5).encode(y="q50:Q")
    return alt.layer(whiskers, boxes, medians).properties(
        title=alt.Title(
            title or f"Per-head distribution of {label} over texts",
            subtitle="box: 25-75 % of texts, line: 10-90 %, tick: median",
        ),
        width=WIDTH + 180,
        height=HEIGHT,
    )


def around_chart(around: pd.DataFrame, *, title: str | None = None) -> alt.LayerChart:
    """Mean ESS at offsets from a token class, against other tokens, with intervals.

    Parameters
    ----------
    around : pandas.DataFrame
        ``summaries.around_token_class(...)``: ``anchor``, ``offset``, ``mean``,
        ``ci_low``, ``ci_high``, ``n_texts``, ``n_anchors``.
    """
    _need(around, ["anchor", "offset", "mean", "ci_low", "ci_high"], "around_token_class")
    label = _value_title(around, "ESS")
    ci = around.attrs.get("ci", 0.95)
    data = around[["anchor", "offset", "mean", "ci_low", "ci_high", "n_texts", "n_anchors"]]
    base = alt.Chart(data).encode(
        x=alt.X(
            "offset:Q",
            title="offset from the token (splits; 0 = right after it)",
            axis=alt.Axis(tickMinStep=1, format="d"),
        ),
        color=alt.Color("anchor:N", title="anchor", legend=alt.Legend(orient="bottom")),
    )
    band = base.mark_area(opacity=0.2).encode(
        y=alt.Y("ci_low:Q", title=label, scale=alt.Scale(zero=False)), y2="ci_high:Q"
    )
    line = base.mark_line(point=True).encode(
        y="mean:Q",
        tooltip=[
            alt.Tooltip("anchor:N"),
            alt.Tooltip("offset:Q"),
            alt.Tooltip("mean:Q", format=".4~f"),
            alt.Tooltip("ci_low:Q", title=f"{ci:.0%} low", format=".4~f"),
            alt.Tooltip("ci_high:Q", title=f"{ci:.0%} high", format=".4~f"),
            alt.Tooltip("n_texts:Q", title="texts"),
            alt.Tooltip("n_anchors:Q", title="anchors"),
        ],
    )
    rule = alt.Chart(pd.DataFrame({"offset": [0]})).mark_rule(color="#999").encode(x="offset:Q")
    return alt.layer(rule, band, line).properties(
        title=alt.Title(
            title or f"{label} around token classes",
            subtitle=f"mean over layers and heads shown, then texts; band: {ci:.0%} bootstrap "
            "interval over texts",
        ),
        width=WIDTH,
        height=HEIGHT,
    )


def token_class_chart(table: pd.DataFrame, *, title: str | None = None) -> alt.LayerChart:
    """Ratio of mean ESS at a token class to the rest, with bootstrap intervals.

    Parameters
    ----------
    table : pandas.DataFrame
        ``summaries.token_class_ess(...)``; with ``by="layer"`` one point per layer
        and class, else one per class. A ratio below 1 means less state right after
        the class's tokens.
    """
    _need(table, ["class", "ratio", "ratio_low", "ratio_high", "n_texts"], "token_class_ess")
    label = _value_title(table, "ESS")
    by_layer = "layer" in table.columns
    cols = ["class", "ratio", "ratio_low", "ratio_high", "n_texts", "n_class"]
    data = table[[*(["layer"] if by_layer else []), *cols]]
    y = alt.Y("layer:O", title="layer") if by_layer else alt.Y("class:N", title="token class")
    base = alt.Chart(data).encode(
        y=y,
        color=alt.Color("class:N", title="token class"),
        tooltip=[
            alt.Tooltip("class:N"),
            *([alt.Tooltip("layer:O")] if by_layer else []),
            alt.Tooltip("ratio:Q", format=".4~f"),
            alt.Tooltip("ratio_low:Q", format=".4~f"),
            alt.Tooltip("ratio_high:Q", format=".4~f"),
            alt.Tooltip("n_texts:Q", title="texts"),
            alt.Tooltip("n_class:Q", title="class splits"),
        ],
    )
    if by_layer:
        base = base.encode(yOffset=alt.YOffset("class:N"))
    x_title = f"{label}: class / rest"
    x = alt.X("ratio:Q", title=x_title, scale=alt.Scale(zero=False))
    bars = base.mark_rule().encode(x=alt.X("ratio_low:Q", title=x_title), x2="ratio_high:Q")
    points = base.mark_point(filled=True).encode(x=x)
    one = alt.Chart(pd.DataFrame({"ratio": [1.0]})).mark_rule(color="#999", strokeDash=[4, 4])
    return alt.layer(one.encode(x="ratio:Q"), bars, points).properties(
        title=alt.Title(
            title or f"{label} right after a token class, relative to other splits",
            subtitle="point: ratio of means over texts; line: bootstrap interval; dashed: 1",
        ),
        width=WIDTH,
        height=max(HEIGHT // 2, 18 * len(data) if by_layer else 30 * len(data)),
    )
