"""``CorpusExplorer``: a sweep's summaries in one widget, and a path from a head to its texts.

Views (altair, offline):

1. the layer x head heatmap of mean ESS (or ESS/TSS, ESS/bound) over the corpus,
   with bootstrap intervals in the tooltip; a click on a cell selects that head;
2. the per-head distributions over texts (heads sorted by median);
3. ESS around a token class against other tokens, with intervals;
4. for the selected head, the texts that drive its mean (highest and lowest
   per-text means), each with a button that opens the text in the ``Explorer``
   at that layer and head.

Everything is computed from the sweep's rows once per setting of ``value`` and
``token_class`` (``ess_widgets.corpus.summaries``); selecting a head only filters
them.
"""

from __future__ import annotations

import html
import os

import ipywidgets as widgets
import pandas as pd
import traitlets

from .. import views
from ..corpus import read_sweep, read_texts, sweep_settings
from ..corpus import views as corpus_views
from ..corpus.summaries import (
    TOKEN_CLASSES,
    around_token_class,
    head_distributions,
    head_means,
    head_texts,
)

__all__ = ["CorpusExplorer", "VALUES"]

# What the heatmap can show: label -> summaries ``value``.
VALUES = {
    "entropy-ESS": "entropy_ess",
    "tolerance-ESS": "tolerance_ess",
    "entropy-ESS / TSS": "entropy_ess/tss",
    "tolerance-ESS / TSS": "tolerance_ess/tss",
    "entropy-ESS / bound min(i, L-i)": "entropy_ess/bound",
}
_SNIPPET = 160  # characters of a text shown in the list


class CorpusExplorer(widgets.VBox):
    """A sweep's corpus-level views, with a click from a head to the texts behind it.

    Parameters
    ----------
    sweep : str, os.PathLike or pandas.DataFrame
        A sweep folder (``ess_widgets.sweep(..., out=...)``), or its rows
        (``read_sweep``; then pass ``texts`` to open texts).
    value : str, default "entropy_ess"
        What the views average (``VALUES``: a column or ``"a/b"``).
    token_class : str, default "delimiter"
        The class of the "around" view (``ess_widgets.corpus.TOKEN_CLASSES``).
    texts : pandas.DataFrame, optional
        ``read_texts(path)``; read from the folder by default.
    model : str, optional
        What the Explorer loads to open a text; the sweep's model by default.
    n_boot : int, default 500
        Bootstrap resamples of the intervals (seeded with ``seed``).
    seed : int, default 0
    n_texts : int, default 5
        Texts listed at each end (highest and lowest per-text mean).

    Attributes (traitlets)
    ----------------------
    value, token_class : str
    layer, channel : int or None
        The selected head (a click on the heatmap, or ``select``).
    error : str
        The last error, shown in the widget.

    Examples
    --------
    >>> from ess_widgets.app import CorpusExplorer  # doctest: +SKIP
    >>> ce = CorpusExplorer("ess.parquet")  # doctest: +SKIP
    >>> ce.select(layer=5, channel=2)  # doctest: +SKIP
    >>> ce.open_text(ce.driving_texts["text_id"][0])  # doctest: +SKIP
    """

    value = traitlets.Unicode("entropy_ess")
    token_class = traitlets.Unicode("delimiter")
    layer = traitlets.Int(None, allow_none=True)
    channel = traitlets.Int(None, allow_none=True)
    error = traitlets.Unicode("")

    def __init__(
        self,
        sweep,
        *,
        value: str = "entropy_ess",
        token_class: str = "delimiter",
        texts: pd.DataFrame | None = None,
        model: str | None = None,
        n_boot: int = 500,
        seed: int = 0,
        n_texts: int = 5,
    ):
        views.enable_offline()
        super().__init__()
        if isinstance(sweep, pd.DataFrame):
            self.frame = sweep
            self.texts = texts
            settings = dict(sweep.attrs)
        elif isinstance(sweep, (str, os.PathLike)):
            self.frame = read_sweep(sweep)
            self.texts = read_texts(sweep) if texts is None else texts
            settings = sweep_settings(sweep)
        else:
            raise TypeError(
                "`sweep` must be a sweep folder or the DataFrame of read_sweep, got "
                f"{type(sweep).__name__}."
            )
        if value not in VALUES.values():
            raise ValueError(f"`value` must be one of {list(VALUES.values())}, got {value!r}.")
        if token_class not in TOKEN_CLASSES:
            raise ValueError(
                f"`token_class` must be one of {sorted(TOKEN_CLASSES)}, got {token_class!r}."
            )
        self.model = model or settings.get("model")
        self.n_boot, self.seed, self.n_texts = int(n_boot), seed, int(n_texts)
        self.explorer = None
        self.means: pd.DataFrame | None = None
        self.driving_texts: pd.DataFrame | None = None

        self._value_dropdown = widgets.Dropdown(
            options=list(VALUES.items()), value=value, description="average"
        )
        self._class_dropdown = widgets.Dropdown(
            options=sorted(TOKEN_CLASSES), value=token_class, description="token class"
        )
        self._status = widgets.HTML()
        self._heatmap_box = widgets.Box()
        self._distribution_box = widgets.Box()
        self._around_box = widgets.Box()
        self._texts_box = widgets.VBox()
        self._explorer_box = widgets.VBox()
        self.children = [
            widgets.HTML("<b>Corpus sweep</b>: " + html.escape(_describe(self.frame, settings))),
            widgets.HBox([self._value_dropdown, self._class_dropdown]),
            self._status,
            widgets.HBox([self._heatmap_box, self._texts_box]),
            self._distribution_box,
            self._around_box,
            self._explorer_box,
        ]
        widgets.link((self._value_dropdown, "value"), (self, "value"))
        widgets.link((self._class_dropdown, "value"), (self, "token_class"))
        self.value, self.token_class = value, token_class
        self._refresh_value()
        self._refresh_class()
        self.observe(lambda _: self._refresh_value(), names="value")
        self.observe(lambda _: self._refresh_class(), names="token_class")
        self.observe(lambda _: self._refresh_texts(), names=["layer", "channel"])

    # ------------------------------------------------------------------ updates
    def _guard(self, job) -> None:
        try:
            job()
            self.error = ""
            self._status.value = ""
        except Exception as err:  # shown in the widget, like the Explorer
            self.error = f"{type(err).__name__}: {err}"
            self._status.value = f"<div style='color:#8a1f11'>{html.escape(self.error)}</div>"

    def _refresh_value(self) -> None:
        def job():
            self.means = head_means(self.frame, self.value, n_boot=self.n_boot, seed=self.seed)
            self.heatmap = _jupyter_chart(corpus_views.head_heatmap(self.means))
            self.heatmap.selections.observe(self._on_cell, names="cell")
            self._heatmap_box.children = [self.heatmap]
            dists = head_distributions(self.frame, self.value)
            self.distributions = _jupyter_chart(corpus_views.head_distribution_chart(dists))
            self._distribution_box.children = [self.distributions]
            self._refresh_class()
            self._refresh_texts()

        self._guard(job)

    def _refresh_class(self) -> None:
        def job():
            around = around_token_class(
                self.frame, self.token_class, self.value, n_boot=self.n_boot, seed=self.seed
            )
            self.around = _jupyter_chart(corpus_views.around_chart(around))
            self._around_box.children = [self.around]

        if self.means is not None:
            self._guard(job)

    def _on_cell(self, change) -> None:
        points = getattr(change["new"], "value", None) or []
        if points:
            self.select(int(points[0]["layer"]), int(points[0]["channel"]))

    def select(self, layer: int, channel: int) -> None:
        """Select a head, as a click on its heatmap cell does."""
        with self.hold_trait_notifications():
            self.layer, self.channel = int(layer), int(channel)

    def _refresh_texts(self) -> None:
        if self.layer is None or self.channel is None:
            self._texts_box.children = [
                widgets.HTML("<i>Click a heatmap cell to list the texts that drive it.</i>")
            ]
            return

        def job():
            top = head_texts(self.frame, self.layer, self.channel, self.value, n=self.n_texts)
            self.driving_texts = top
            rows = [
                widgets.HTML(
                    f"<b>Layer {self.layer}, head {self.channel}</b>: per-text mean of "
                    f"{html.escape(self.value)}, highest and lowest"
                )
            ]
            for text_id, mean in zip(top["text_id"], top["mean"]):
                button = widgets.Button(
                    description=f"open text {int(text_id)}",
                    tooltip="open this text in the Explorer at this layer and head",
                    layout=widgets.Layout(width="130px"),
                )
                button.on_click(lambda _, t=int(text_id): self._guard(lambda: self.open_text(t)))
                snippet = html.escape(_snippet(self._text(int(text_id))))
                rows.append(
                    widgets.HBox([button, widgets.HTML(f"<code>{mean:.3f}</code> &nbsp;{snippet}")])
                )
            self._texts_box.children = rows

        self._guard(job)

    # ------------------------------------------------------------------ texts
    def _text(self, text_id: int) -> str | None:
        if self.texts is None:
            return None
        row = self.texts[self.texts["text_id"] == text_id]
        if row.empty:
            return None
        text = row["text"].iloc[0]
        return None if pd.isna(text) else str(text)

    def open_text(self, text_id: int, *, layer: int | None = None, channel: int | None = None):
        """Open one text of the sweep in the ``Explorer`` (at the selected layer and head).

        The explorer is created on first use (it loads the sweep's model) and
        reused after, through its public traits ``model``, ``text``, ``layer`` and
        ``head``.

        Returns
        -------
        Explorer
        """
        from .explorer import Explorer

        text = self._text(int(text_id))
        if text is None:
            raise ValueError(
                f"Text {text_id} has no text to open (token-id input, or texts not given)."
            )
        layer = self.layer if layer is None else int(layer)
        channel = self.channel if channel is None else int(channel)
        layer = 0 if layer is None else layer
        channel = 0 if channel is None else channel
        if self.explorer is None:
            self.explorer = Explorer(model=self.model, text=text, layer=layer, head=channel)
            self._explorer_box.children = [self.explorer]
        else:
            with self.explorer.hold_trait_notifications():
                self.explorer.model = self.model
                self.explorer.text = text
                self.explorer.layer = layer
                self.explorer.head = channel
        return self.explorer


def _jupyter_chart(chart):
    import altair as alt

    return alt.JupyterChart(chart)


def _snippet(text: str | None) -> str:
    if text is None:
        return "(token ids)"
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= _SNIPPET else one_line[: _SNIPPET - 1] + "…"


def _describe(frame: pd.DataFrame, settings: dict) -> str:
    n_texts = frame["text_id"].nunique() if "text_id" in frame.columns else 0
    parts = [f"model {settings.get('model', '?')}", f"{n_texts} texts"]
    if "tol" in settings:
        mode = "relative" if settings.get("relative") else "absolute"
        parts.append(f"tolerance {settings['tol']:g} ({mode})")
    return ", ".join(parts)
