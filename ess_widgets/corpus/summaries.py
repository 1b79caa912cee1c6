"""Summaries of a sweep: plain functions from the ESS rows to small tables.

Every summary treats the **text** as the unit of sampling: a statistic is first
averaged within each text (over the splits, and the layers and heads it pools),
then over texts, and its confidence interval is a percentile bootstrap over texts
(resampled with replacement, ``n_boot`` times, from ``numpy.random.default_rng(seed)``,
the same resamples for every row of one call, so intervals are reproducible).

``value`` names what is averaged: a column (``"entropy_ess"``, ``"tolerance_ess"``)
or a ratio of two columns written ``"a/b"``: ``"entropy_ess/tss"`` (utilization,
ESS over the theoretical state size) or ``"entropy_ess/bound"`` (ESS over its
largest possible value ``min(i, L-i)`` at that split, which removes most of the
dependence on position).

Token classes (``token_classes``) are decided on the ``token`` column, the text of
the token read just before the split: the split right after a delimiter is where
the paper reports ESS dips ("state modulation").
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd


def delimiter_kind(token: str):
    """``views.delimiter_kind``, imported on first use (the views pull in altair)."""
    from ..views.token_view import delimiter_kind as kind

    return kind(token)


__all__ = [
    "TOKEN_CLASSES",
    "token_classes",
    "values",
    "head_means",
    "head_distributions",
    "head_texts",
    "token_class_ess",
    "around_token_class",
    "dip_at_token_class",
    "bootstrap_means",
]

_END_WORDS = re.compile(r"end|eos|eot|</s>|sep", re.IGNORECASE)


def _is_end_of_sequence(token: str) -> bool:
    return delimiter_kind(token) == "special" and bool(_END_WORDS.search(token))


# Built-in token classes: name -> predicate on the token text.
TOKEN_CLASSES: dict[str, Callable[[str], bool]] = {
    "delimiter": lambda t: delimiter_kind(t) is not None,
    "newline": lambda t: delimiter_kind(t) == "newline",
    "sentence_end": lambda t: delimiter_kind(t) == "sentence_end",
    "special": lambda t: delimiter_kind(t) == "special",
    "end_of_sequence": _is_end_of_sequence,
}


def token_classes(classes) -> dict[str, Callable[[str], bool]]:
    """Token classes as ``{name: predicate}``.

    Parameters
    ----------
    classes : str, callable, list of those, or dict of name -> callable
        A built-in name (``TOKEN_CLASSES``: ``"delimiter"`` (any of the next three),
        ``"newline"``, ``"sentence_end"``, ``"special"`` (``<|im_end|>``, ``</s>``,
        ...), ``"end_of_sequence"`` (special tokens that end a turn or document)),
        or a predicate ``token_text -> bool`` (named after the function).

    Examples
    --------
    >>> sorted(token_classes(["newline", "sentence_end"]))
    ['newline', 'sentence_end']
    >>> token_classes({"comma": lambda t: t.strip() == ","})["comma"](" ,")
    True
    """
    if isinstance(classes, dict):
        items = list(classes.items())
    else:
        if isinstance(classes, str) or callable(classes):
            classes = [classes]
        items = []
        for c in classes:
            if isinstance(c, str):
                if c not in TOKEN_CLASSES:
                    raise ValueError(
                        f"Unknown token class {c!r}: use one of {sorted(TOKEN_CLASSES)} or a "
                        "predicate token_text -> bool."
                    )
                items.append((c, TOKEN_CLASSES[c]))
            elif callable(c):
                items.append((getattr(c, "__name__", "predicate"), c))
            else:
                raise TypeError(
                    f"A token class must be a name or a callable, got {type(c).__name__}."
                )
    for name, predicate in items:
        if not callable(predicate):
            raise TypeError(f"Token class {name!r} must map to a callable, got {predicate!r}.")
    if not items:
        raise ValueError("`classes` is empty: name at least one token class.")
    return dict(items)


def _class_mask(frame: pd.DataFrame, predicate) -> np.ndarray:
    """Rows whose token belongs to the class (the predicate runs once per distinct token)."""
    tokens = frame["token"]
    if isinstance(tokens.dtype, pd.CategoricalDtype):
        hit = np.array([bool(predicate(str(t))) for t in tokens.cat.categories], dtype=bool)
        codes = tokens.cat.codes.to_numpy()
        return np.where(codes >= 0, hit[np.maximum(codes, 0)], False)
    distinct = {t: bool(predicate(str(t))) for t in pd.unique(tokens)}
    return tokens.map(distinct).to_numpy(dtype=bool)


def values(frame: pd.DataFrame, value: str) -> np.ndarray:
    """The numbers a summary averages: a column, or ``"a/b"`` a ratio of two columns."""
    if not isinstance(value, str):
        raise TypeError(f"`value` must be a column name or 'a/b', got {type(value).__name__}.")
    parts = value.split("/")
    missing = [p for p in parts if p not in frame.columns]
    if len(parts) > 2 or missing:
        raise ValueError(
            f"`value` = {value!r}: expected a column or 'a/b' of columns of the table "
            f"({list(frame.columns)}), e.g. 'entropy_ess' or 'entropy_ess/tss'."
        )
    v = frame[parts[0]].to_numpy(dtype=np.float64)
    if len(parts) == 2:
        v = v / frame[parts[1]].to_numpy(dtype=np.float64)
    return v


def _check_frame(frame, needed=("text_id", "layer", "channel", "split", "token")) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"Summaries take the DataFrame of read_sweep, got {type(frame).__name__} (for a "
            "lazy dataset, read the columns you need: ds.to_table(...).to_pandas())."
        )
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"The table lacks columns {missing}: pass the table of read_sweep.")
    if frame.empty:
        raise ValueError("The table is empty: the sweep has no ESS rows (see read_failures).")


def _check_ci(ci: float, n_boot: int) -> None:
    if not 0 < ci < 1:
        raise ValueError(f"`ci` must be in (0, 1), e.g. 0.95, got {ci}.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"`n_boot` must be an int >= 1, got {n_boot!r}.")


def bootstrap_means(per_text: np.ndarray, *, n_boot: int, ci: float, seed) -> tuple:
    """Mean over texts of each row, with a percentile bootstrap interval over texts.

    Parameters
    ----------
    per_text : array of shape (R, N)
        One statistic per row and text; NaN where a text has no value for a row.
    n_boot, ci, seed
        Resamples, coverage, and the seed of ``numpy.random.default_rng``. The same
        resamples of the N texts serve every row.

    Returns
    -------
    mean, low, high : arrays of shape (R,)
        ``nanmean`` over texts, and the ``(1 - ci) / 2`` and ``(1 + ci) / 2``
        quantiles of the resampled means (resamples where a row has no text are
        left out).
    """
    m = np.atleast_2d(np.asarray(per_text, dtype=np.float64))
    n = m.shape[1]
    present = ~np.isnan(m)
    filled = np.where(present, m, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=1) / present.sum(axis=1)
    rng = np.random.default_rng(seed)
    # Multinomial counts: how often each text is drawn in each resample, (n_boot, N).
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (filled @ counts.T) / (present.astype(np.float64) @ counts.T)  # (R, n_boot)
    alpha = (1.0 - ci) / 2
    with warnings.catch_warnings():  # a row without any text has no interval: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        low = np.nanquantile(boot, alpha, axis=1)
        high = np.nanquantile(boot, 1 - alpha, axis=1)
    return mean, low, high


def _per_text(frame: pd.DataFrame, v: np.ndarray, keys: list[str]) -> pd.DataFrame:
    """Mean of ``v`` per (keys..., text_id): a (groups x texts) table, NaN where absent."""
    data = frame[[*keys, "text_id"]].copy()
    data["_v"] = v
    return data.groupby([*keys, "text_id"], observed=True)["_v"].mean().unstack("text_id")


def head_means(
    frame: pd.DataFrame,
    value: str = "entropy_ess",
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed=0,
) -> pd.DataFrame:
    """Mean ESS per layer and head (or channel) over a corpus, with bootstrap intervals.

    Per head: the mean over each text's splits, then the mean over texts; the
    interval resamples texts.

    Parameters
    ----------
    frame : pandas.DataFrame
        ``read_sweep(path)`` (or any rows with ``text_id``, ``layer``, ``channel``
        and the ``value`` columns).
    value : str, default "entropy_ess"
        A column, or ``"a/b"`` (``"entropy_ess/tss"``: mean utilization).
    n_boot : int, default 1000
    ci : float, default 0.95
    seed : int or numpy Generator seed, default 0

    Returns
    -------
    pandas.DataFrame
        One row per (layer, channel): ``layer``, ``channel``, ``mean``, ``ci_low``,
        ``ci_high``, ``n_texts``. ``attrs``: ``value``, ``ci``, ``n_boot``, ``seed``.
    """
    _check_frame(frame, ("text_id", "layer", "channel"))
    _check_ci(ci, n_boot)
    table = _per_text(frame, values(frame, value), ["layer", "channel"])
    mean, low, high = bootstrap_means(table.to_numpy(), n_boot=n_boot, ci=ci, seed=seed)
    out = table.index.to_frame(index=False)
    out["mean"], out["ci_low"], out["ci_high"] = mean, low, high
    out["n_texts"] = table.notna().sum(axis=1).to_numpy()
    out.attrs.update(value=value, ci=ci, n_boot=n_boot, seed=seed)
    return out


def head_distributions(
    frame: pd.DataFrame,
    value: str = "entropy_ess/tss",
    *,
    quantiles=(0.1, 0.25, 0.5, 0.75, 0.9),
) -> pd.DataFrame:
    """How each head's per-text mean is spread over the corpus (the stratification picture).

    Per head: the mean of ``value`` over each text's splits gives one number per
    text; this returns the mean and quantiles of those numbers, with the head's rank
    by median (0 = lowest) across all heads.

    Returns
    -------
    pandas.DataFrame
        ``layer``, ``channel``, ``mean``, ``q10``, ``q25``, ``q50``, ``q75``, ``q90``
        (one column per quantile, named by its percent), ``n_texts``, ``rank``.
    """
    _check_frame(frame, ("text_id", "layer", "channel"))
    qs = [float(q) for q in quantiles]
    if not qs or any(not 0 <= q <= 1 for q in qs):
        raise ValueError(f"`quantiles` must be numbers in [0, 1], got {quantiles!r}.")
    table = _per_text(frame, values(frame, value), ["layer", "channel"])
    m = table.to_numpy()
    out = table.index.to_frame(index=False)
    out["mean"] = np.nanmean(m, axis=1)
    for q in qs:
        out[f"q{round(q * 100):d}"] = np.nanquantile(m, q, axis=1)
    out["n_texts"] = table.notna().sum(axis=1).to_numpy()
    median = np.nanquantile(m, 0.5, axis=1)
    out["rank"] = pd.Series(median).rank(method="first").astype(int).to_numpy() - 1
    out.attrs.update(value=value)
    return out


def head_texts(
    frame: pd.DataFrame, layer: int, channel: int, value: str = "entropy_ess", *, n: int = 5
) -> pd.DataFrame:
    """The texts that drive one head's mean: its per-text means, highest first.

    Returns
    -------
    pandas.DataFrame
        ``text_id``, ``mean`` (of ``value`` over the text's splits), ``n_splits``,
        ``difference`` (from the head's corpus mean); the top ``n`` rows and the
        bottom ``n`` rows are both kept (``n`` each), highest first.
    """
    _check_frame(frame, ("text_id", "layer", "channel"))
    rows = frame[(frame["layer"] == layer) & (frame["channel"] == channel)]
    if rows.empty:
        raise ValueError(f"No rows for layer {layer}, channel {channel} in this table.")
    v = values(rows, value)
    per = (
        pd.DataFrame({"text_id": rows["text_id"].to_numpy(), "v": v})
        .groupby("text_id")["v"]
        .agg(["mean", "size"])
        .rename(columns={"size": "n_splits"})
        .reset_index()
    )
    per["difference"] = per["mean"] - per["mean"].mean()
    per = per.sort_values("mean", ascending=False, kind="stable", ignore_index=True)
    if len(per) > 2 * n:
        per = pd.concat([per.head(n), per.tail(n)], ignore_index=True)
    return per


def token_class_ess(
    frame: pd.DataFrame,
    classes="delimiter",
    value: str = "entropy_ess",
    *,
    by=None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed=0,
) -> pd.DataFrame:
    """ESS right after tokens of a class, against all other splits, over texts.

    Per text (and per ``by`` group): the mean of ``value`` over splits whose token
    is in the class, and over the other splits. Texts without a class token are
    left out of that class. Reported: the means over texts, their difference and
    ratio (``mean_class / mean_rest``), each with a bootstrap interval over texts.

    Parameters
    ----------
    frame : pandas.DataFrame
        ``read_sweep(path)``.
    classes : see ``token_classes``
        ``"delimiter"`` by default.
    value : str, default "entropy_ess"
        A column or ``"a/b"``; ``"entropy_ess/bound"`` compares ESS as a fraction of
        its positional bound.
    by : str or list of str, optional
        Also split by these columns (``"layer"``, ``["layer", "channel"]``).
    n_boot, ci, seed : see ``head_means``

    Returns
    -------
    pandas.DataFrame
        ``class``, the ``by`` columns, ``n_texts``, ``n_class`` (class splits),
        ``mean_class``, ``mean_rest``, ``difference``, ``difference_low``,
        ``difference_high``, ``ratio``, ``ratio_low``, ``ratio_high``.
    """
    _check_frame(frame, ("text_id", "token"))
    _check_ci(ci, n_boot)
    keys = [] if by is None else ([by] if isinstance(by, str) else list(by))
    v = values(frame, value)
    rows = []
    for name, predicate in token_classes(classes).items():
        mask = _class_mask(frame, predicate)
        data = frame[[*keys, "text_id"]].copy()
        data["_v"], data["_in"] = v, mask
        grouped = data.groupby([*keys, "text_id", "_in"], observed=True)["_v"]
        per = grouped.mean().unstack("_in").reindex(columns=[True, False])
        count = grouped.size().unstack("_in").reindex(columns=[True, False]).fillna(0)
        per = per[per[True].notna() & per[False].notna()]  # texts with both kinds of splits
        if per.empty:
            raise ValueError(f"No text has both {name!r} tokens and other tokens in this table.")
        groups = per.groupby(level=keys) if keys else [((), per)]
        for key, sub in groups:
            key = key if isinstance(key, tuple) else (key,)
            at, rest = sub[True].to_numpy(), sub[False].to_numpy()
            stats = _paired_bootstrap(at, rest, n_boot=n_boot, ci=ci, seed=seed)
            n_class = int(count.loc[sub.index, True].sum())
            rows.append(
                {"class": name, **dict(zip(keys, key)), "n_texts": len(at), "n_class": n_class}
                | stats
            )
    out = pd.DataFrame(rows)
    out.attrs.update(value=value, ci=ci, n_boot=n_boot, seed=seed)
    return out


def _paired_bootstrap(at: np.ndarray, rest: np.ndarray, *, n_boot, ci, seed) -> dict:
    """Means of two paired per-text series, their difference and ratio, with intervals."""
    n = len(at)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64) / n
    boot_at, boot_rest = counts @ at, counts @ rest
    alpha = (1 - ci) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_boot = boot_at / boot_rest
        ratio = at.mean() / rest.mean()
    diff_boot = boot_at - boot_rest
    return {
        "mean_class": at.mean(),
        "mean_rest": rest.mean(),
        "difference": at.mean() - rest.mean(),
        "difference_low": np.quantile(diff_boot, alpha),
        "difference_high": np.quantile(diff_boot, 1 - alpha),
        "ratio": ratio,
        "ratio_low": np.nanquantile(ratio_boot, alpha),
        "ratio_high": np.nanquantile(ratio_boot, 1 - alpha),
    }


def _split_series(frame: pd.DataFrame, value: str, classes):
    """Per text: the splits, their value averaged over the rows' layers and heads, and masks.

    Returns ``{text_id: (splits, values)}`` and ``{anchor: {text_id: mask}}`` with one
    mask per class and ``"other tokens"`` (in none of the classes).
    """
    predicates = token_classes(classes)
    data = frame[["text_id", "split"]].copy()
    data["_v"] = values(frame, value)
    series = data.groupby(["text_id", "split"], observed=True)["_v"].mean()
    first = frame.drop_duplicates(["text_id", "split"]).set_index(["text_id", "split"])["token"]
    token_frame = pd.DataFrame({"token": first.reindex(series.index).astype(str).to_numpy()})
    masks = {name: _class_mask(token_frame, p) for name, p in predicates.items()}
    masks["other tokens"] = ~np.logical_or.reduce(list(masks.values()))
    text_ids = series.index.get_level_values("text_id").to_numpy()
    splits = series.index.get_level_values("split").to_numpy()
    v = series.to_numpy()
    bounds = np.flatnonzero(np.r_[True, text_ids[1:] != text_ids[:-1], True])
    per_text = {}
    per_mask: dict = {name: {} for name in masks}
    for a, b in itertools.pairwise(bounds.tolist()):
        text = int(text_ids[a])
        per_text[text] = (splits[a:b], v[a:b])
        for name, mask in masks.items():
            per_mask[name][text] = mask[a:b]
    return per_text, per_mask


def _windows(split_values, anchors, offsets):
    """Values at ``anchor + offset`` for anchors whose whole window the text has: (n, k)."""
    splits, v = split_values
    lookup = dict(zip(splits.tolist(), v.tolist()))
    rows = [
        [lookup[a + o] for o in offsets]
        for a in anchors.tolist()
        if all(a + o in lookup for o in offsets)
    ]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(offsets))


def around_token_class(
    frame: pd.DataFrame,
    classes="delimiter",
    value: str = "entropy_ess",
    *,
    offsets=range(-5, 6),
    n_boot: int = 1000,
    ci: float = 0.95,
    seed=0,
) -> pd.DataFrame:
    """Mean ESS at splits around tokens of a class, with the other tokens as control.

    Each split is first averaged over the layers and heads in ``frame`` (filter it
    to look at one layer). An anchor is a split whose token is in the class; only
    anchors whose whole window (``anchor + offset`` for every offset) lies inside
    the text count, so that every offset averages the same anchors and the edges of
    a text (where the bound ``min(i, L-i)`` is small) do not enter. Per text and
    offset the windows are averaged, then texts are averaged and bootstrapped. The
    control (``"other tokens"``) does the same with every split whose token is in
    none of the classes. Offsets need consecutive splits: sweep with ``splits=None``.

    Returns
    -------
    pandas.DataFrame
        ``anchor`` (the class name, or ``"other tokens"``), ``offset``, ``mean``,
        ``ci_low``, ``ci_high``, ``n_texts``, ``n_anchors``.
    """
    _check_frame(frame)
    _check_ci(ci, n_boot)
    offsets = np.asarray(list(offsets), dtype=np.int64)
    if offsets.size == 0:
        raise ValueError("`offsets` is empty: pass e.g. range(-5, 6).")
    per_text, per_mask = _split_series(frame, value, classes)
    texts = list(per_text)
    rows = []
    for name, masks in per_mask.items():
        means = np.full((len(offsets), len(texts)), np.nan)
        n_anchors = 0
        for t, text in enumerate(texts):
            splits, _ = per_text[text]
            w = _windows(per_text[text], splits[masks[text]], offsets)
            n_anchors += len(w)
            if len(w):
                means[:, t] = w.mean(axis=0)
        mean, low, high = bootstrap_means(means, n_boot=n_boot, ci=ci, seed=seed)
        for o, off in enumerate(offsets):
            rows.append(
                {
                    "anchor": name,
                    "offset": int(off),
                    "mean": mean[o],
                    "ci_low": low[o],
                    "ci_high": high[o],
                    "n_texts": int((~np.isnan(means[o])).sum()),
                    "n_anchors": n_anchors,
                }
            )
    out = pd.DataFrame(rows)
    out.attrs.update(value=value, ci=ci, n_boot=n_boot, seed=seed)
    return out


def dip_at_token_class(
    frame: pd.DataFrame,
    classes="delimiter",
    value: str = "entropy_ess",
    *,
    half_width: int = 5,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed=0,
) -> pd.DataFrame:
    """ESS right after a class token over the mean of its neighbours, against other tokens.

    The position-matched measure of state modulation: for each anchor with a full
    window of ``half_width`` splits on each side, the ratio of its value to the
    mean of its ``2 * half_width`` neighbours (a value below 1 means less state
    than around it). Ratios are averaged per text, then over texts, with a
    bootstrap interval; ``"other tokens"`` gives the same ratio at ordinary tokens,
    which carry the slow trend of the bound ``min(i, L-i)`` (ESS is first averaged
    over the layers and heads in ``frame``, as in ``around_token_class``).

    Returns
    -------
    pandas.DataFrame
        ``anchor``, ``ratio`` (mean over texts of the per-text mean ratio),
        ``ci_low``, ``ci_high``, ``below`` (fraction of anchors below their
        neighbours), ``n_texts``, ``n_anchors``.
    """
    _check_frame(frame)
    _check_ci(ci, n_boot)
    if isinstance(half_width, bool) or not isinstance(half_width, int) or half_width < 1:
        raise ValueError(f"`half_width` must be an int >= 1, got {half_width!r}.")
    offsets = np.arange(-half_width, half_width + 1)
    centre = half_width
    per_text, per_mask = _split_series(frame, value, classes)
    texts = list(per_text)
    rows = []
    for name, masks in per_mask.items():
        ratios = np.full(len(texts), np.nan)
        below, n_anchors = 0, 0
        for t, text in enumerate(texts):
            splits, _ = per_text[text]
            w = _windows(per_text[text], splits[masks[text]], offsets)
            if not len(w):
                continue
            r = w[:, centre] / np.delete(w, centre, axis=1).mean(axis=1)
            ratios[t] = r.mean()
            below += int((r < 1).sum())
            n_anchors += len(r)
        mean, low, high = bootstrap_means(ratios[None, :], n_boot=n_boot, ci=ci, seed=seed)
        rows.append(
            {
                "anchor": name,
                "ratio": mean[0],
                "ci_low": low[0],
                "ci_high": high[0],
                "below": below / n_anchors if n_anchors else np.nan,
                "n_texts": int((~np.isnan(ratios)).sum()),
                "n_anchors": n_anchors,
            }
        )
    out = pd.DataFrame(rows)
    out.attrs.update(value=value, ci=ci, n_boot=n_boot, seed=seed, half_width=half_width)
    return out
