"""The explorer's dashboard: a view state and one layer's data in, the numbers and charts out.

Pure: no widgets, no threads, no model. ``LayerData`` holds one layer's split
spectra as far as they are computed (a progressive view fills them chunk by
chunk); ``view_numbers`` re-thresholds them for a ``ViewState`` and
``build_charts`` turns the numbers into the altair charts the explorer shows.
``next_chunk`` plans the order in which the spectra are computed: the shown
channel at the selected split, then a coarse stride of splits, then the rest.

Vocabulary: a *channel* is one operator of a layer (an attention head, an SSM
channel or head); ``channel_name`` is what the model calls it. The *mixer* is the
part of a block that mixes tokens (``"attention"``, ``"mamba"``, ...); the
*family* is its operator family (``"softmax_attention"``, ``"selective_ssm"``).
"""

from __future__ import annotations

import html
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from altair.utils.schemapi import debug_mode

from .. import views
from ..core import entropy_ess, tolerance_ess
from ..views._format import display_token, format_number, tolerance_label, visible_text

__all__ = [
    "MEAN",
    "ViewState",
    "LayerData",
    "view_numbers",
    "build_charts",
    "summary_html",
    "stride_splits",
    "split_costs",
    "choose_stride",
    "next_chunk",
    "overview_table",
]

MEAN = -1  # ``head`` value meaning "mean over the layer's channels"
# At most this many channels are drawn as scatter points (SSM layers have thousands).
MAX_SCATTER_CHANNELS = 64
_NO_VALIDATION = threading.Lock()
# Chart names, in the order they are drawn.
CHARTS = ("spectrum", "ess_curve", "tolerance_vs_entropy", "operator")
# What each chart depends on, besides the layer data.
# ("data": more spectra computed, the view refined.)
DEPENDS = {
    "spectrum": {"head", "split", "tol", "relative", "data"},
    "ess_curve": {"head", "split", "tol", "relative", "data"},
    "tolerance_vs_entropy": {"split", "tol", "relative", "data"},
    "operator": {"head", "split"},
}


@dataclass(frozen=True)
class ViewState:
    """What the user chose: a channel (or ``MEAN``), a split and a tolerance."""

    head: int
    split: int
    tol: float
    relative: bool


@dataclass(eq=False)
class LayerData:
    """One layer's split spectra, as far as computed, and what the views need next to them.

    Attributes
    ----------
    layer : int
    mixer : str
        The block's mixer: ``"attention"``, ``"mamba"``, ..., ``"operator"`` for user data.
    family : str
        The operator family (``"softmax_attention"``, ``"selective_ssm"``, ...).
    channel_name : str
        What one channel is called: ``"head"`` or ``"channel"``.
    tokens : tuple of str
        The ``L`` token strings (untrusted text: the views escape it).
    spectra : numpy.ndarray of float64, shape (C, L-1, K)
        Singular values of ``T[c, i:, :i]`` in row ``i - 1``; zero where not computed.
    computed : numpy.ndarray of bool, shape (C, L-1)
        Which (channel, split) rows hold their final values.
    entropy : numpy.ndarray of float64, shape (C, L-1)
        Entropy-ESS of the computed rows, NaN elsewhere.
    tss : numpy.ndarray of shape (C, L-1), or None
        Theoretical state size, when known.
    dense : callable
        ``dense(c)`` returns channel ``c`` as an ``(L, L)`` numpy array.
    noise_floor : float
        Singular values below ``noise_floor * sigma_1`` are rounding noise of the
        operator or of the path that computed them (see ``views_below_noise``).
    coarse : tuple of int
        The splits of the coarse first view, once chosen.
    """

    layer: int
    mixer: str
    family: str
    channel_name: str
    tokens: tuple[str, ...]
    spectra: np.ndarray
    computed: np.ndarray
    entropy: np.ndarray
    tss: np.ndarray | None
    dense: Callable[[int], np.ndarray] = field(repr=False)
    noise_floor: float = 0.0
    coarse: tuple[int, ...] = ()

    @classmethod
    def empty(
        cls,
        *,
        layer: int,
        mixer: str,
        family: str,
        channel_name: str,
        tokens: Sequence[str],
        num_channels: int,
        width: int,
        tss=None,
        dense: Callable[[int], np.ndarray],
        noise_floor: float = 0.0,
    ) -> LayerData:
        """Nothing computed yet: ``C`` channels, ``L = len(tokens)``, ``K = width``."""
        L, C = len(tokens), int(num_channels)
        if tss is not None:
            tss = np.broadcast_to(np.asarray(tss, dtype=np.float64), (C, L - 1))
        return cls(
            layer=int(layer),
            mixer=str(mixer),
            family=str(family),
            channel_name=str(channel_name),
            tokens=tuple(str(t) for t in tokens),
            spectra=np.zeros((C, L - 1, int(width))),
            computed=np.zeros((C, L - 1), dtype=bool),
            entropy=np.full((C, L - 1), np.nan),
            tss=tss,
            dense=dense,
            noise_floor=float(noise_floor),
        )

    @property
    def num_channels(self) -> int:
        return int(self.spectra.shape[0])

    @property
    def length(self) -> int:
        return len(self.tokens)

    @property
    def complete(self) -> bool:
        """Every split of every channel computed."""
        return bool(self.computed.all())

    @property
    def progress(self) -> float:
        """Fraction of the (channel, split) rows computed, in [0, 1]."""
        return float(self.computed.mean())

    @property
    def nbytes(self) -> int:
        return int(self.spectra.nbytes + self.entropy.nbytes + self.computed.nbytes)

    def fill(self, channels: Sequence[int], splits: Sequence[int], values) -> None:
        """Store computed spectra ``values`` of shape ``(len(channels), len(splits), K')``."""
        ch = np.asarray(channels, dtype=np.intp)
        rows = np.asarray(splits, dtype=np.intp) - 1
        v = np.asarray(values, dtype=np.float64)
        if v.shape[:2] != (len(ch), len(rows)):
            raise ValueError(
                f"`values` must have shape ({len(ch)}, {len(rows)}, K), got {v.shape}."
            )
        width = min(v.shape[2], self.spectra.shape[2])
        block = np.zeros((len(ch), len(rows), self.spectra.shape[2]))
        block[..., :width] = v[..., :width]
        self.spectra[np.ix_(ch, rows)] = block
        self.entropy[np.ix_(ch, rows)] = entropy_ess(block).numpy()
        self.computed[np.ix_(ch, rows)] = True

    def tolerance_ess(self, tol: float, *, relative: bool = False) -> np.ndarray:
        """Tolerance-ESS ``(C, L-1)`` as float, NaN where not computed yet."""
        counts = tolerance_ess(self.spectra, tol, relative=relative).numpy()
        return np.where(self.computed, counts, np.nan)


# ----------------------------------------------------------------------------- numbers
def view_numbers(data: LayerData, state: ViewState) -> dict:
    """What the views show for ``state``, as arrays: the numbers behind every chart.

    Returns
    -------
    dict
        ``tolerance_ess`` and ``entropy_ess`` ``(C, L-1)`` (NaN: not computed yet),
        ``curve_tolerance``, ``curve_entropy``, ``curve_tss`` (the curves shown: one
        channel, or the mean where every channel is computed), ``shown_head`` (the
        channel of the spectrum and heatmap; for the mean, the one closest to it at
        the split), ``split``, ``spectrum`` (its singular values, None while not
        computed), ``tokens``, ``complete``, ``progress``, ``threshold`` (the
        absolute cut at the split) and ``below_noise_floor`` (True when that cut is
        below the noise floor of the spectra, so counts near it count noise).
    """
    C, L = data.num_channels, data.length
    i = int(state.split)
    if not 1 <= i <= L - 1:
        raise ValueError(f"`split` must be in 1 .. L-1 = {L - 1}, got {i}.")
    tol_ess = data.tolerance_ess(state.tol, relative=state.relative)
    if state.head == MEAN:
        every = data.computed.all(0)
        with np.errstate(invalid="ignore"):
            curve_tol = np.where(every, np.nanmean(_or_zero(tol_ess), 0), np.nan)
            curve_ent = np.where(every, np.nanmean(_or_zero(data.entropy), 0), np.nan)
        curve_tss = None if data.tss is None else data.tss.mean(0)
        column = tol_ess[:, i - 1]
        if np.isfinite(curve_tol[i - 1]):
            shown = int(np.argmin(np.abs(column - curve_tol[i - 1])))
        else:  # the mean is not known yet: the first channel computed at this split
            done = np.flatnonzero(data.computed[:, i - 1])
            shown = int(done[0]) if len(done) else 0
    else:
        shown = int(state.head)
        if not 0 <= shown < C:
            raise ValueError(f"`head` must be -1 (mean) or in 0 .. {C - 1}, got {shown}.")
        curve_tol, curve_ent = tol_ess[shown], data.entropy[shown]
        curve_tss = None if data.tss is None else data.tss[shown]
    spectrum = data.spectra[shown, i - 1] if data.computed[shown, i - 1] else None
    sigma_1 = float(spectrum[0]) if spectrum is not None and len(spectrum) else float("nan")
    threshold = state.tol * sigma_1 if state.relative else state.tol
    below = bool(spectrum is not None and sigma_1 > 0 and threshold < data.noise_floor * sigma_1)
    return {
        "tolerance_ess": tol_ess,
        "entropy_ess": data.entropy,
        "curve_tolerance": curve_tol,
        "curve_entropy": curve_ent,
        "curve_tss": curve_tss,
        "shown_head": shown,
        "split": i,
        "spectrum": spectrum,
        "tokens": data.tokens,
        "complete": data.complete,
        "progress": data.progress,
        "threshold": threshold,
        "below_noise_floor": below,
    }


def _or_zero(a: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(a), a, 0.0)


def who_label(data: LayerData, state: ViewState, shown: int) -> str:
    """``"head 3"`` or ``"mean over 9 heads"``."""
    name = data.channel_name
    if state.head == MEAN:
        return f"mean over {data.num_channels} {name}s"
    return f"{name} {shown}"


# ----------------------------------------------------------------------------- charts
def charts_to_build(changed: set[str] | None) -> set[str]:
    """The charts that depend on ``changed`` (a set of trait names and ``"data"``; all for
    None)."""
    return {name for name in CHARTS if changed is None or set(changed) & DEPENDS[name]}


def build_charts(
    data: LayerData, state: ViewState, numbers: dict, names: set[str] | None = None
) -> dict:
    """The charts ``names`` (all of ``CHARTS`` when None) for this state, by name."""
    want = CHARTS if names is None else [name for name in CHARTS if name in names]
    # The builders make valid specs (tested); altair's validation of every intermediate
    # object would double the time of a re-threshold. Its switch is global: explorers take
    # turns, so that none switches it back on in the middle of another's build.
    with _NO_VALIDATION, debug_mode(False):
        return _build(data, state, numbers, want)


def _build(data: LayerData, state: ViewState, numbers: dict, want) -> dict:
    i, shown, name = numbers["split"], numbers["shown_head"], data.channel_name
    tol, rel = state.tol, state.relative
    mean = state.head == MEAN
    who = who_label(data, state, shown)
    charts = {}
    if "spectrum" in want:
        closest = f" (closest to the {name} mean)" if mean else ""
        title = f"Singular values of T[i:, :i] at split i={i}, {name} {shown}{closest}"
        if numbers["spectrum"] is None:
            charts["spectrum"] = _pending_chart(title, "computing this split …")
        else:
            charts["spectrum"] = views.spectrum_chart(
                numbers["spectrum"], tol=tol, relative=rel, split=i, title=title
            )
    if "ess_curve" in want:
        title = f"ESS along the sequence, layer {data.layer}, {who}"
        if not np.isfinite(numbers["curve_entropy"]).any():
            charts["ess_curve"] = _pending_chart(title, "computing …")
        else:
            charts["ess_curve"] = views.ess_curve_chart(
                numbers["curve_tolerance"],
                numbers["curve_entropy"],
                tss=numbers["curve_tss"],
                split=i,
                tokens=data.tokens,
                tol=tol,
                relative=rel,
                title=title + ("" if numbers["complete"] else " (refining)"),
            )
    if "tolerance_vs_entropy" in want:
        tol_ess, ent = numbers["tolerance_ess"], data.entropy
        C = data.num_channels
        note = ""
        if C > MAX_SCATTER_CHANNELS:
            pick = np.linspace(0, C - 1, MAX_SCATTER_CHANNELS).round().astype(int)
            tol_ess, ent = tol_ess[pick], ent[pick]
            note = f" ({MAX_SCATTER_CHANNELS} of {C} {name}s)"
        charts["tolerance_vs_entropy"] = views.tolerance_vs_entropy_chart(
            tol_ess,
            ent,
            tol=tol,
            relative=rel,
            split=i,
            channel_name=name,
            title=f"Tolerance-ESS against entropy-ESS, layer {data.layer}{note}",
        )
    if "operator" in want:
        charts["operator"] = views.operator_heatmap(
            data.dense(shown),
            split=i,
            tokens=data.tokens,
            title=f"Operator T of layer {data.layer}, {name} {shown}"
            + (" (closest to the mean)" if mean else ""),
        )
    return charts


def _pending_chart(title: str, message: str):
    import altair as alt

    frame = pd.DataFrame({"text": [message]})
    return (
        alt.Chart(frame)
        .mark_text(size=14, color="#8a6d00")
        .encode(text="text:N")
        .properties(title=title, width=views.charts.WIDTH, height=60)
    )


def token_label(data: LayerData, state: ViewState, numbers: dict) -> str:
    """What the token view's colours are."""
    who = who_label(data, state, numbers["shown_head"])
    label = tolerance_label(state.tol, state.relative)
    return f"tolerance-ESS ({label}), layer {data.layer}, {who}"


def summary_html(data: LayerData, state: ViewState, numbers: dict) -> str:
    """One line of HTML under the controls: the numbers at the split (escaped)."""
    i = numbers["split"]
    who = who_label(data, state, numbers["shown_head"])
    esc = html.escape
    tol_at = numbers["curve_tolerance"][i - 1]
    ent_at = numbers["curve_entropy"][i - 1]
    token = esc(visible_text(display_token(data.tokens[i - 1])))
    parts = [
        f"<b>split i={i}</b>, after token {i - 1} <code>{token}</code>",
        f"layer {data.layer} ({esc(data.mixer)}), {esc(who)}",
        f'tolerance-ESS = <b class="essw-shown-tol-ess">{_number(tol_at)}</b> '
        f"({esc(tolerance_label(state.tol, state.relative))})",
        f"entropy-ESS = <b>{_number(ent_at, '.3g')}</b>",
        f"bound min(i, L-i) = {min(i, data.length - i)}",
    ]
    tss = numbers["curve_tss"]
    if tss is not None:
        parts.append(f"TSS = {format_number(round(float(tss[i - 1]), 3))}")
    parts.append(f"L = {data.length} tokens")
    line = '<div class="essw-summary">' + " · ".join(parts) + "</div>"
    if numbers["below_noise_floor"]:
        floor = format_number(data.noise_floor)
        line += (
            '<div class="essw-noise-note">The threshold '
            f"{esc(format_number(numbers['threshold']))} is below the noise floor of these "
            f"spectra (about {esc(floor)} × σ₁): singular values that small are rounding "
            "noise, so the tolerance-ESS counts noise. Use a larger tolerance.</div>"
        )
    return line


def _number(x: float, fmt: str | None = None) -> str:
    if not math.isfinite(float(x)):
        return "…"
    if fmt is not None:
        return format(float(x), fmt)
    return format_number(round(float(x), 3))


# ----------------------------------------------------------------------------- planning
def stride_splits(L: int, stride: int) -> list[int]:
    """Every ``stride``-th split of ``1 .. L-1``, starting at 1 and always with ``L-1``.

    >>> stride_splits(10, 4)
    [1, 5, 9]
    >>> stride_splits(11, 4)
    [1, 5, 9, 10]
    """
    stride = max(int(stride), 1)
    out = list(range(1, L, stride))
    if out[-1] != L - 1:
        out.append(L - 1)
    return out


def split_costs(L: int, structured: bool) -> np.ndarray:
    """Relative cost of the spectra at each split ``1 .. L-1`` (shape ``(L-1,)``).

    Dense path: the block ``T[i:, :i]`` is ``n x m`` with ``m = min(i, L-i)``; its
    Gram matrix costs ``n m^2`` and the eigenvalues about ``4 m^3``. Structured
    path (a recurrence): about the same for every split.
    """
    i = np.arange(1, L, dtype=np.float64)
    if structured:
        return np.ones(L - 1)
    m, n = np.minimum(i, L - i), np.maximum(i, L - i)
    return m * m * (n + 4 * m)


def choose_stride(costs: np.ndarray, seconds_per_cost: float, budget_s: float) -> int:
    """The smallest stride whose splits are predicted to take at most ``budget_s``.

    ``costs`` ``(L-1,)`` from ``split_costs``; ``seconds_per_cost`` measured on this
    machine. Every split (stride 1) when that fits.
    """
    L = len(costs) + 1
    for stride in range(1, L):
        rows = np.asarray(stride_splits(L, stride)) - 1
        if costs[rows].sum() * seconds_per_cost <= budget_s:
            return stride
    return L - 1


def next_chunk(
    computed: np.ndarray,
    costs: np.ndarray,
    *,
    coarse: Sequence[int],
    shown: int,
    split: int,
    seconds_per_cost: float | None,
    target_s: float = 0.25,
    channel_cost: float = 0.0,
    streamed: bool = False,
) -> tuple[list[int], list[int]] | None:
    """The next (channels, splits) to compute, or None when everything is computed.

    Order: the shown channel at the selected split (``shown = MEAN``: every channel);
    the shown channel on the ``coarse`` splits; the other channels on them; the
    shown channel everywhere; the others everywhere. A chunk is one channel and as
    many of its missing splits as fit ``target_s`` (at least one); cheap channels
    (a structured path) are grouped, all with the same splits.

    Parameters
    ----------
    computed : bool array (C, L-1)
    costs : array (L-1,)
        Relative cost per split (``split_costs``).
    seconds_per_cost : float or None
        Measured speed; None before any measurement (the chunk is then one split).
    channel_cost : float
        Fixed cost per channel and chunk, in the units of ``costs``.
    streamed : bool
        The source yields a chunk split by split and may be stopped between any two
        (``LayerSource.streams``): a chunk is then one channel and every split it
        misses in the current step of the order, whatever the budget.
    """
    C, n = computed.shape
    channels = list(range(C)) if shown == MEAN else [shown]
    others = [] if shown == MEAN else [c for c in range(C) if c != shown]
    coarse_rows = np.zeros(n, dtype=bool)
    coarse_rows[np.asarray(list(coarse), dtype=np.intp) - 1] = True
    at_split = np.zeros(n, dtype=bool)
    at_split[split - 1] = True
    every = np.ones(n, dtype=bool)
    budget = None if seconds_per_cost is None else target_s / max(seconds_per_cost, 1e-15)
    for rows, group in (
        (at_split, channels),
        (coarse_rows, channels),
        (coarse_rows, others),
        (every, channels),
        (every, others),
    ):
        todo = [c for c in group if not computed[c][rows].all()]
        if not todo:
            continue
        first = todo[0]
        missing = np.flatnonzero(rows & ~computed[first])
        if streamed and (budget is not None or len(missing) == 1):
            return [first], [int(r) + 1 for r in missing]
        if budget is None:  # not measured yet: one split to measure with
            return [first], [int(missing[len(missing) // 2]) + 1]
        per_channel = channel_cost + costs[missing].sum()
        if per_channel <= budget:
            # whole channels with the same missing rows, as many as fit
            same = [c for c in todo if np.array_equal(np.flatnonzero(rows & ~computed[c]), missing)]
            k = max(1, min(len(same), int(budget // max(per_channel, 1e-300))))
            return same[:k], [int(r) + 1 for r in missing]
        # one channel, a prefix of its missing splits (in stride order: spread out)
        order = _spread(missing)
        take, total = [], channel_cost
        for r in order:
            if take and total + costs[r] > budget:
                break
            take.append(int(r))
            total += costs[r]
        return [first], sorted(r + 1 for r in take)
    return None


def _spread(rows: np.ndarray) -> np.ndarray:
    """``rows`` reordered so that every prefix is spread over the range (bit reversal)."""
    n = len(rows)
    if n <= 2:
        return rows
    bits = max(1, math.ceil(math.log2(n)))
    keys = [int(f"{k:0{bits}b}"[::-1], 2) for k in range(n)]
    return rows[np.argsort(keys, kind="stable")]


# ----------------------------------------------------------------------------- overview
@dataclass(eq=False)
class OverviewLayer:
    """One (layer, mixer) of the overview: spectra at some splits of every channel."""

    layer: int
    mixer: str
    channel_name: str
    splits: np.ndarray  # (n,) split numbers
    spectra: np.ndarray  # (C, n, K)
    entropy: np.ndarray  # (C, n)


def overview_table(layers: Sequence[OverviewLayer], tol: float, relative: bool) -> pd.DataFrame:
    """Mean ESS over the computed splits, one row per (layer, mixer, channel).

    Columns ``layer``, ``mixer``, ``channel``, ``tolerance_ess``, ``entropy_ess``,
    ``splits`` (how many splits the means are over).
    """
    rows = []
    for item in layers:
        tol_mean = tolerance_ess(item.spectra, tol, relative=relative).numpy().mean(1)
        ent_mean = item.entropy.mean(1)
        for c in range(len(ent_mean)):
            rows.append(
                (
                    item.layer,
                    item.mixer,
                    c,
                    float(tol_mean[c]),
                    float(ent_mean[c]),
                    len(item.splits),
                )
            )
    return pd.DataFrame(
        rows, columns=["layer", "mixer", "channel", "tolerance_ess", "entropy_ess", "splits"]
    )


def overview_chart(table: pd.DataFrame, *, measure: str, tol: float, relative: bool):
    """The overview heatmap of ``table`` (``overview_table``) for one measure."""
    several = table["mixer"].nunique() > 1
    frame = table.copy()
    if several:  # one row per (layer, mixer)
        frame["layer"] = frame["layer"].astype(str) + " " + frame["mixer"]
    if measure == "tolerance-ESS":
        column = f"mean tolerance-ESS ({tolerance_label(tol, relative)})"
        frame = frame.rename(columns={"tolerance_ess": column})
    else:
        column = "mean entropy-ESS"
        frame = frame.rename(columns={"entropy_ess": column})
    return views.overview_chart(frame[["layer", "channel", column]], value=column)
