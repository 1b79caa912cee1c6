"""``Explorer``: choose a model, a layer, a head and a tolerance, and see ESS live.

One widget (an ``ipywidgets.VBox``) with the controls on top and five views:

1. the singular values of ``T[i:, :i]`` at the selected split, with the tolerance;
2. tolerance-ESS and entropy-ESS along the sequence (with the bound and the TSS),
   and tolerance-ESS against entropy-ESS, one point per split and head;
3. the tokens coloured by ESS (``TokenView``; a click selects the split);
4. the operator as a heatmap with the block ``T[i:, :i]`` outlined;
5. on demand, the average ESS per layer and head.

Caching: the split spectra of each (model, text, layer) are computed once. Changing
the tolerance, its mode, the split or the head only re-thresholds the cached
spectra in numpy and rebuilds the charts that depend on what changed. Everything
runs synchronously in the kernel, so a burst of changes ends with the views of the
last setting; errors are shown inside the widget and the views are hidden until
the next successful update, so they never show numbers of another setting.
"""

from __future__ import annotations

import functools
import html
import os
import pathlib
import time
from collections import OrderedDict

import altair as alt
import ipywidgets as widgets
import numpy as np
import pandas as pd
import traitlets

from .. import views
from ..adapters import builtin_models, load
from ..core import DEFAULT_TOL
from ..views._format import display_token, format_number, tolerance_label
from .sources import LayerData, ModelSource, threshold_ess

__all__ = ["Explorer", "DEFAULT_TEXT", "load_model"]

DEFAULT_TEXT = (
    "The capital of France is Paris. It is known for the Eiffel Tower, which was built "
    "in 1889.\nWhere is the Eiffel Tower? It stands in Paris, next to the river Seine."
)
MEAN = -1  # ``head`` value meaning "mean over heads or channels"

# Layers kept per explorer (each holds spectra (C, L-1, K) and the captured operators).
_CACHE_SIZE = 8
# At most this many channels are drawn as scatter points (SSM layers have thousands).
_MAX_SCATTER_CHANNELS = 64
# Models kept loaded across explorers (loading smollm2-135m takes about 10 s).
_HANDLES: OrderedDict = OrderedDict()
_MAX_HANDLES = 2
_OFFLINE_READY = False
# trait -> the control that shows it
_CONTROLS = {
    "layer": "_layer_slider",
    "head": "_head_dropdown",
    "tol": "_tol_slider",
    "relative": "_relative_toggle",
    "split": "_split_slider",
}

_CSS = """
<style>
.essw-explorer { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
.essw-explorer .essw-title { font-size: 16px; font-weight: 600; margin: 2px 0; }
.essw-explorer .essw-error-box { color: #8a1f11; background: #fdecea; padding: 6px 10px;
  border-left: 4px solid #c0392b; white-space: pre-wrap; }
.essw-explorer .essw-busy { color: #8a6d00; }
.essw-explorer .essw-summary { background: #f4f6f8; padding: 4px 10px; border-radius: 4px; }
.essw-explorer .essw-stale { opacity: 0.35; }
</style>
"""


def _ensure_offline() -> None:
    """Inline the vega libraries once per process (no CDN)."""
    global _OFFLINE_READY
    if not _OFFLINE_READY:
        views.enable_offline()
        _OFFLINE_READY = True


def load_model(name: str):
    """``ess_widgets.adapters.load(name)``, cached: the last two models stay loaded."""
    if name in _HANDLES:
        _HANDLES.move_to_end(name)
        return _HANDLES[name]
    try:  # transformers' per-tensor progress bars would fill the notebook output
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        hf_logging = None
    quiet = hf_logging is not None and hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        handle = load(name)
    finally:
        if quiet:
            hf_logging.enable_progress_bar()
    _HANDLES[name] = handle
    while len(_HANDLES) > _MAX_HANDLES:
        _HANDLES.popitem(last=False)
    return handle


def _message(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError):  # str(KeyError) adds quotes
        text = str(err.args[0]) if err.args else text
    return f"{type(err).__name__}: {text}"


class Explorer(widgets.VBox):
    """Live ESS of one layer of a language model on a text, in one widget.

    Parameters
    ----------
    model : str, default "smollm2-135m"
        A built-in name (``ess_widgets.adapters.builtin_models()``), a hub id or a
        local folder (anything ``ess_widgets.adapters.load`` accepts). The MQAR
        models (``"mqar-gla-dk8-kv8"``, ...) read MQAR token text (``"k3 v17 _
        q:k3"``, see ``ess_widgets.adapters.mqar``).
    text : str
        The input text. While it is the default English text, a model with its own
        input format (MQAR) shows its ``default_text`` instead: an MQAR sequence
        of the model's training task.
    layer : int, default 0
    head : int, default 0
        Head or channel; ``-1`` shows the mean over heads (channels).
    tol : float, default 1e-3
        Tolerance of the tolerance-ESS.
    relative : bool, default False
        Count singular values above ``tol * sigma_1`` instead of ``tol``.
    split : int, optional
        The split ``i`` (``1 .. L-1``); the middle of the text by default.
    max_tokens : int, default 256
        Longer texts are refused with a message.

    Attributes (traitlets, observable and settable from Python)
    ----------
    model, text, layer, head, tol, relative, split
        The state above; setting one updates the views.
    busy : bool
        True while a model or a layer is being computed.
    error : str
        The last error, shown in the widget ("" when all is well).
    last_update_ms : float
        Python-side time of the last view update (re-threshold and charts).

    Examples
    --------
    >>> ex = Explorer()  # doctest: +SKIP
    >>> ex.tol = 1e-2; ex.layer = 5; ex.head = -1  # doctest: +SKIP
    >>> ex.export_html("explorer.html")  # doctest: +SKIP
    """

    model = traitlets.Unicode("smollm2-135m").tag(sync=True)
    text = traitlets.Unicode(DEFAULT_TEXT).tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    head = traitlets.Int(0).tag(sync=True)
    tol = traitlets.Float(DEFAULT_TOL).tag(sync=True)
    relative = traitlets.Bool(False).tag(sync=True)
    split = traitlets.Int(None, allow_none=True).tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        model: str = "smollm2-135m",
        text: str = DEFAULT_TEXT,
        layer: int = 0,
        head: int = 0,
        tol: float = DEFAULT_TOL,
        relative: bool = False,
        split: int | None = None,
        *,
        max_tokens: int = 256,
        _source=None,
        _title: str | None = None,
    ):
        _ensure_offline()
        super().__init__()
        self.add_class("essw-explorer")
        self.max_tokens = int(max_tokens)
        self.last_update_ms = float("nan")
        self._fixed_source = _source
        self._source = _source
        self._source_key = ("data", id(_source)) if _source is not None else None
        self._auto_text: str | None = None  # a model's own example, put in by the explorer
        self._cache: OrderedDict = OrderedDict()
        self._data: LayerData | None = None
        self._charts: dict[str, alt.TopLevelMixin] = {}
        self._overview_table: pd.DataFrame | None = None
        self._overview_spectra: list[np.ndarray] | None = None
        self._suspend = True
        self._build_controls(_title)
        with self.hold_trait_notifications():
            self.model = "" if _source is not None else str(model)
            self.text = "" if _source is not None else str(text)
            self.layer = int(layer)
            self.head = int(head)
            self.tol = float(tol)
            self.relative = bool(relative)
            self.split = split
        self._link_controls()
        self._suspend = False
        self._load()

    # ---------------------------------------------------------------- building
    def _build_controls(self, title: str | None) -> None:
        W = widgets
        wide = W.Layout(width="auto")
        style = {"description_width": "initial"}
        data_mode = self._fixed_source is not None
        self._title = W.HTML(
            f'<div class="essw-title">{html.escape(title or "Effective state-size explorer")}</div>'
        )
        options = builtin_models()
        self._model_dropdown = W.Dropdown(
            options=options,
            value=options[0] if options else None,
            description="model",
            layout=W.Layout(width="240px"),
        )
        self._model_text = W.Text(
            placeholder="or a hub id / local folder (gpt2, state-spaces/mamba-130m-hf)",
            layout=W.Layout(width="360px"),
        )
        self._model_button = W.Button(description="load", layout=W.Layout(width="70px"))
        self._model_button.on_click(lambda _: self._load_model_text())
        model_row = W.HBox([self._model_dropdown, self._model_text, self._model_button])

        self._layer_slider = W.IntSlider(
            0, min=0, max=1, description="layer", continuous_update=False, style=style
        )
        self._head_dropdown = W.Dropdown(
            options=[("head 0", 0)], value=0, description="head", layout=W.Layout(width="260px")
        )
        self._tol_slider = W.FloatLogSlider(
            value=DEFAULT_TOL,
            base=10,
            min=-10,
            max=1,
            step=0.1,
            description="tolerance",
            readout_format=".1e",
            continuous_update=True,
            style=style,
            layout=W.Layout(width="380px"),
        )
        self._relative_toggle = W.ToggleButtons(
            options=[("absolute", False), ("relative (× σ₁)", True)],
            value=False,
            style={"button_width": "130px"},
        )
        self._split_slider = W.IntSlider(
            1,
            min=1,
            max=2,
            description="split i",
            continuous_update=False,
            style=style,
            layout=W.Layout(width="460px"),
        )
        self._text_area = W.Textarea(
            value="", rows=3, layout=W.Layout(flex="1 1 auto"), placeholder="Type a text…"
        )
        self._compute_button = W.Button(
            description="compute",
            button_style="primary",
            icon="play",
            tooltip="compute ESS of this text",
            layout=W.Layout(width="120px", flex="0 0 auto"),
        )
        self._compute_button.on_click(lambda _: setattr(self, "text", self._text_area.value))
        self._status = W.HTML("")
        self._error_box = W.HTML("")
        self._summary = W.HTML("")

        rows = [W.HTML(_CSS), self._title]
        if not data_mode:
            text_row = W.HBox(
                [self._text_area, self._compute_button], layout=W.Layout(width="100%")
            )
            rows += [model_row, text_row]
        rows += [
            W.HBox([self._layer_slider, self._head_dropdown]),
            W.HBox([self._tol_slider, self._relative_toggle]),
            W.HBox([self._split_slider, self._status]),
            self._error_box,
        ]

        # views
        self._token_view = views.TokenView()
        self._token_view.observe(self._on_token_click, names="selected")
        self._chart_widgets = {
            name: alt.JupyterChart(_placeholder(), embed_options={"actions": False})
            for name in ("spectrum", "ess_curve", "tolerance_vs_entropy", "operator", "overview")
        }
        cw = self._chart_widgets
        self._views = W.VBox(
            [
                self._summary,
                self._token_view,
                W.HBox([cw["spectrum"], cw["ess_curve"]], layout=W.Layout(flex_flow="row wrap")),
                W.HBox(
                    [cw["tolerance_vs_entropy"], cw["operator"]],
                    layout=W.Layout(flex_flow="row wrap"),
                ),
            ]
        )
        self._overview_button = W.Button(
            description="compute overview (all layers)", icon="th", layout=wide
        )
        self._overview_button.on_click(lambda _: self.compute_overview())
        self._overview_measure = W.ToggleButtons(
            options=["tolerance-ESS", "entropy-ESS"],
            value="tolerance-ESS",
            style={"button_width": "130px"},
        )
        self._overview_measure.observe(lambda _: self._show_overview(), names="value")
        self._progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="260px"))
        self._progress.layout.visibility = "hidden"
        cw["overview"].layout.display = "none"
        self._overview_box = W.VBox(
            [
                W.HBox([self._overview_button, self._overview_measure, self._progress]),
                cw["overview"],
            ]
        )
        self.children = [*rows, self._views, self._overview_box]

    def _link_controls(self) -> None:
        """Two-way sync of traits and controls (by hand: a control may not yet accept a
        trait's value, e.g. a head before the layer's heads are known)."""
        self._pushing = False
        for trait, attr in _CONTROLS.items():
            getattr(self, attr).observe(functools.partial(self._on_control, trait), names="value")
        self._model_dropdown.observe(self._on_model_dropdown, names="value")
        self._sync_model_controls()
        self._text_area.value = self.text
        self._push_all()

    def _on_control(self, trait: str, change) -> None:
        if self._pushing or self._suspend:
            return
        if trait in ("split", "head") and self._data is None:
            return
        try:
            setattr(self, trait, change["new"])
        except traitlets.TraitError as err:
            self._set_error(err)

    def _push(self, trait: str) -> None:
        """Show a trait's value on its control, if the control can show it."""
        control = getattr(self, _CONTROLS[trait])
        value = getattr(self, trait)
        if value is None:
            return
        if isinstance(control, widgets.Dropdown):
            ok = value in [v for _, v in control.options]
        elif isinstance(control, widgets.FloatLogSlider):
            ok = control.base**control.min <= value <= control.base**control.max
        elif isinstance(control, widgets.IntSlider):
            ok = control.min <= value <= control.max
        else:
            ok = True
        if ok and control.value != value:
            self._pushing = True
            try:
                control.value = value
            finally:
                self._pushing = False

    def _push_all(self) -> None:
        for trait in _CONTROLS:
            self._push(trait)

    # ------------------------------------------------------------ validation
    @traitlets.validate("tol")
    def _check_tol(self, proposal):
        value = float(proposal["value"])
        if not np.isfinite(value) or value < 0:
            raise traitlets.TraitError(f"`tol` must be a finite number >= 0, got {value}.")
        return value

    @traitlets.validate("layer")
    def _check_layer(self, proposal):
        value = int(proposal["value"])
        n = self._source.num_layers if self._source is not None else None
        if value < 0 or (n is not None and value >= n):
            bound = f"0 .. {n - 1}" if n is not None else ">= 0"
            raise traitlets.TraitError(f"`layer` must be in {bound}, got {value}.")
        return value

    @traitlets.validate("head")
    def _check_head(self, proposal):
        value = int(proposal["value"])
        C = self._data.num_channels if self._data is not None else None
        if value < MEAN or (C is not None and value >= C):
            top = f"{C - 1}" if C is not None else "C-1"
            raise traitlets.TraitError(
                f"`head` must be -1 (mean over heads/channels) or in 0 .. {top}, got {value}."
            )
        return value

    @traitlets.validate("split")
    def _check_split(self, proposal):
        value = proposal["value"]
        if self._data is None:
            return value
        L = self._data.length
        if value is None:
            return L // 2
        value = int(value)
        if not 1 <= value <= L - 1:
            raise traitlets.TraitError(f"`split` must be in 1 .. L-1 = {L - 1}, got {value}.")
        return value

    # ------------------------------------------------------------- observers
    @traitlets.observe("model", "text", "layer")
    def _on_data_change(self, change) -> None:
        if change["name"] == "layer":
            self._push("layer")
        if change["name"] == "model":
            self._sync_model_controls()
        if change["name"] == "text" and self._text_area.value != change["new"]:
            self._text_area.value = change["new"]
        if not self._suspend:
            self._load()

    @traitlets.observe("head", "split", "tol", "relative")
    def _on_view_change(self, change) -> None:
        self._push(change["name"])
        if not self._suspend:
            self._refresh({change["name"]})

    def _on_token_click(self, change) -> None:
        new = change["new"]
        if new >= 1 and not self._suspend and self._data is not None and new != self.split:
            self.split = new

    def _on_model_dropdown(self, change) -> None:
        if change["new"] and change["new"] != self.model and not self._suspend:
            self.model = change["new"]

    def _load_model_text(self) -> None:
        name = self._model_text.value.strip()
        if name:
            self.model = name

    def _sync_model_controls(self) -> None:
        if self.model in self._model_dropdown.options:
            self._model_dropdown.value = self.model
        elif self.model:
            self._model_text.value = self.model

    # ------------------------------------------------------------- computing
    def _set_busy(self, message: str) -> None:
        self.busy = True
        self._status.value = f'<span class="essw-busy">⏳ {html.escape(message)}</span>'

    def _set_error(self, err: BaseException | str) -> None:
        text = err if isinstance(err, str) else _message(err)
        self.error = text
        self._error_box.value = (
            f'<div class="essw-error-box" role="alert">{html.escape(text)}</div>'
        )
        self._views.add_class("essw-stale")
        self._views.layout.display = "none"  # never leave views of another setting
        self._token_view.error = text

    def _clear_error(self) -> None:
        self.error = ""
        self._error_box.value = ""
        self._views.remove_class("essw-stale")
        self._views.layout.display = None
        self._token_view.error = ""

    def _ensure_source(self) -> None:
        if self._fixed_source is not None:
            self._source = self._fixed_source
            return
        key = (self.model, self.text)
        if self._source is not None and self._source_key == key:
            return
        self._source, self._source_key, self._data = None, None, None
        if not self.model.strip():
            raise ValueError("No model: choose a built-in model or type a hub id or folder.")
        if self.model not in _HANDLES:
            self._set_busy(f"loading {self.model} …")
        handle = load_model(self.model.strip())
        self._use_model_text(handle)
        self._source = ModelSource(handle, self.text, max_tokens=self.max_tokens)
        self._source_key = (self.model, self.text)
        self._overview_table = None
        self._overview_spectra = None
        self._chart_widgets["overview"].layout.display = "none"

    def _use_model_text(self, handle) -> None:
        """Swap in the model's own example text (``handle.default_text``, e.g. an MQAR
        sequence) while the text is the default one or another model's example."""
        own = getattr(handle, "default_text", None) or DEFAULT_TEXT
        if self.text != own and self.text in (DEFAULT_TEXT, self._auto_text):
            suspend, self._suspend = self._suspend, True
            try:
                self.text = own
            finally:
                self._suspend = suspend
        self._auto_text = None if own == DEFAULT_TEXT else own

    def layer_data(self, layer: int | None = None) -> LayerData:
        """The cached spectra (and friends) of a layer of the current model and text."""
        self._ensure_source()
        layer = self.layer if layer is None else int(layer)
        key = (self._source_key, layer)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        data = self._source.layer_data(layer)
        self._cache[key] = data
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return data

    def _load(self) -> None:
        """Compute (or fetch from the cache) the current layer, then redraw everything."""
        try:
            self._ensure_source()
            key = (self._source_key, self.layer)
            if self.layer >= self._source.num_layers:
                raise IndexError(
                    f"Layer {self.layer} is out of range: the model has "
                    f"{self._source.num_layers} layers (0..{self._source.num_layers - 1})."
                )
            if key not in self._cache:
                self._set_busy(f"computing layer {self.layer} …")
            data = self.layer_data()
        except Exception as err:
            self._data = None
            self._set_error(err)
            self.busy = False
            self._status.value = ""
            return
        self._suspend = True
        self._pushing = True  # new ranges may clamp control values: not a user change
        try:
            self._data = data
            L, C = data.length, data.num_channels
            self._layer_slider.max = max(self._source.num_layers - 1, 0)
            self._layer_slider.disabled = self._source.num_layers < 2
            name = data.channel
            self._head_dropdown.options = [(f"mean over {name}s", MEAN)] + [
                (f"{name} {c}", c) for c in range(C)
            ]
            self._head_dropdown.description = name
            self._split_slider.max = L - 1
        finally:
            self._pushing = False
        try:
            if self.head >= C:
                self.head = C - 1
            split = self.split
            self.split = L // 2 if split is None else min(max(int(split), 1), L - 1)
            self._push_all()
        finally:
            self._suspend = False
            self.busy = False
            self._status.value = ""
        self._refresh(None)

    # ------------------------------------------------------------------ views
    def _refresh(self, changed: set[str] | None) -> None:
        """Re-threshold the cached spectra and rebuild the charts that depend on ``changed``."""
        d = self._data
        if d is None:
            return
        every = changed is None
        changed = changed or set()
        t0 = time.perf_counter()
        try:
            self._draw(d, every, changed)
        except Exception as err:
            self._set_error(err)
            return
        if self.error:
            self._clear_error()
        self.last_update_ms = (time.perf_counter() - t0) * 1e3

    def current(self) -> dict:
        """What the views show now, as arrays: the numbers behind every chart.

        Returns
        -------
        dict
            ``tolerance_ess`` and ``entropy_ess`` ``(C, L-1)``, ``curve_tolerance``,
            ``curve_entropy`` (the curves shown: one head or the mean), ``shown_head``
            (the head of the spectrum and heatmap), ``split``, ``spectrum`` (its
            singular values), ``tokens``.
        """
        d = self._data
        if d is None:
            raise RuntimeError(f"Nothing to show: {self.error or 'no data yet'}")
        tol_ess = d.tolerance_ess(self.tol, self.relative)
        i = int(self.split)
        if self.head == MEAN:
            curve_tol = tol_ess.mean(0)
            curve_ent = d.entropy.mean(0)
            curve_tss = None if d.tss is None else d.tss.mean(0)
            # spectrum and heatmap: the head closest to the mean at this split
            shown = int(np.argmin(np.abs(tol_ess[:, i - 1] - curve_tol[i - 1])))
        else:
            shown = int(self.head)
            curve_tol = tol_ess[shown]
            curve_ent = d.entropy[shown]
            curve_tss = None if d.tss is None else d.tss[shown]
        return {
            "tolerance_ess": tol_ess,
            "entropy_ess": d.entropy,
            "curve_tolerance": curve_tol,
            "curve_entropy": curve_ent,
            "curve_tss": curve_tss,
            "shown_head": shown,
            "split": i,
            "spectrum": d.spectra[shown, i - 1],
            "tokens": d.tokens,
        }

    def _draw(self, d: LayerData, every: bool, changed: set[str]) -> None:
        cur = self.current()
        i, shown, name = cur["split"], cur["shown_head"], d.channel
        tol, rel = self.tol, self.relative
        C = d.num_channels
        mean = self.head == MEAN
        who = f"mean over {C} {name}s" if mean else f"{name} {shown}"
        tol_text = tolerance_label(tol, rel)
        charts = {}
        if every or changed & {"head", "split", "tol", "relative"}:
            title = None
            if mean:
                title = (
                    f"Singular values of T[i:, :i] at split i={i}, {name} {shown} "
                    f"(closest to the {name} mean)"
                )
            else:
                title = f"Singular values of T[i:, :i] at split i={i}, {name} {shown}"
            charts["spectrum"] = views.spectrum_chart(
                cur["spectrum"], tol=tol, relative=rel, split=i, title=title
            )
            charts["ess_curve"] = views.ess_curve_chart(
                cur["curve_tolerance"],
                cur["curve_entropy"],
                tss=cur["curve_tss"],
                split=i,
                tokens=d.tokens,
                tol=tol,
                relative=rel,
                title=f"ESS along the sequence, layer {d.layer}, {who}",
            )
        if every or changed & {"split", "tol", "relative"}:
            tol_ess, ent = cur["tolerance_ess"], d.entropy
            note = ""
            if C > _MAX_SCATTER_CHANNELS:
                pick = np.linspace(0, C - 1, _MAX_SCATTER_CHANNELS).round().astype(int)
                tol_ess, ent = tol_ess[pick], ent[pick]
                note = f" ({_MAX_SCATTER_CHANNELS} of {C} {name}s)"
            charts["tolerance_vs_entropy"] = views.tolerance_vs_entropy_chart(
                tol_ess,
                ent,
                tol=tol,
                relative=rel,
                split=i,
                channel_name=name,
                title=f"Tolerance-ESS against entropy-ESS, layer {d.layer}{note}",
            )
        if every or changed & {"head", "split"}:
            charts["operator"] = views.operator_heatmap(
                d.dense(shown),
                split=i,
                tokens=d.tokens,
                title=f"Operator T of layer {d.layer}, {name} {shown}"
                + (" (closest to the mean)" if mean else ""),
            )
        for key, chart in charts.items():
            self._charts[key] = chart
            _show(self._chart_widgets[key], chart)
        if every or changed & {"head", "tol", "relative"}:
            self._token_view.update_ess(
                cur["curve_tolerance"],
                tokens=list(d.tokens),
                value_label=f"tolerance-ESS ({tol_text}), layer {d.layer}, {who}",
            )
        if self._token_view.selected != i:
            self._token_view.selected = i
        self._summary.value = self._summary_html(d, cur, who)
        if (every or changed & {"tol", "relative"}) and self._overview_table is not None:
            self._show_overview()

    def _summary_html(self, d: LayerData, cur: dict, who: str) -> str:
        i = cur["split"]
        parts = [
            f"<b>split i={i}</b>, after token {i - 1} "
            f"<code>{html.escape(display_token(d.tokens[i - 1]))}</code>",
            f"layer {d.layer} ({html.escape(d.kind)}), {html.escape(who)}",
            f'tolerance-ESS = <b class="essw-shown-tol-ess">'
            f"{format_number(round(float(cur['curve_tolerance'][i - 1]), 3))}</b> "
            f"({html.escape(tolerance_label(self.tol, self.relative))})",
            f"entropy-ESS = <b>{float(cur['curve_entropy'][i - 1]):.3g}</b>",
            f"bound min(i, L-i) = {min(i, d.length - i)}",
        ]
        if cur["curve_tss"] is not None:
            parts.append(f"TSS = {format_number(round(float(cur['curve_tss'][i - 1]), 3))}")
        parts.append(f"L = {d.length} tokens")
        return '<div class="essw-summary">' + " · ".join(parts) + "</div>"

    # --------------------------------------------------------------- overview
    def compute_overview(self) -> pd.DataFrame:
        """Average ESS of every layer and head (runs all layers, with a progress bar).

        Returns
        -------
        pandas.DataFrame
            Columns ``layer``, ``head`` (or ``channel``), ``tolerance_ess`` (mean over
            splits at the current tolerance) and ``entropy_ess`` (mean over splits).
        """
        try:
            self._ensure_source()
        except Exception as err:
            self._set_error(err)
            return pd.DataFrame()
        n = self._source.num_layers
        bar = self._progress
        bar.max, bar.value = n, 0
        bar.layout.visibility = "visible"
        self._overview_button.disabled = True
        spectra_list, entropy_means = [], []
        keep_bytes, budget = 0, 512 * 2**20
        try:
            for layer in range(n):
                self._set_busy(f"overview: layer {layer + 1} of {n} …")
                key = (self._source_key, layer)
                d = self._cache[key] if key in self._cache else self._source.layer_data(layer)
                if layer == self.layer:
                    self._cache[key] = d
                entropy_means.append(d.entropy.mean(1))
                keep_bytes += d.spectra.nbytes
                spectra_list.append(d.spectra if keep_bytes <= budget else None)
                bar.value = layer + 1
        except Exception as err:
            self._set_error(err)
            return pd.DataFrame()
        finally:
            self.busy = False
            self._status.value = ""
            self._overview_button.disabled = False
            bar.layout.visibility = "hidden"
        name = self._data.channel if self._data is not None else "head"
        rows = []
        for layer, (s, ent) in enumerate(zip(spectra_list, entropy_means)):
            tol_mean = (
                threshold_mean(s, self.tol, self.relative)
                if s is not None
                else np.full(len(ent), np.nan)
            )
            for c in range(len(ent)):
                rows.append((layer, c, tol_mean[c], ent[c]))
        self._overview_spectra = spectra_list
        self._overview_table = pd.DataFrame(
            rows, columns=["layer", name, "tolerance_ess", "entropy_ess"]
        )
        self._show_overview()
        return self._overview_table

    def _show_overview(self) -> None:
        table = self._overview_table
        if table is None:
            return
        spectra_list = self._overview_spectra or []
        name = table.columns[1]
        if all(s is not None for s in spectra_list):
            table["tolerance_ess"] = np.concatenate(
                [threshold_mean(s, self.tol, self.relative) for s in spectra_list]
            )
        if self._overview_measure.value == "tolerance-ESS":
            column = f"mean tolerance-ESS ({tolerance_label(self.tol, self.relative)})"
            frame = table[["layer", name, "tolerance_ess"]].rename(
                columns={"tolerance_ess": column}
            )
        else:
            column = "mean entropy-ESS"
            frame = table[["layer", name, "entropy_ess"]].rename(columns={"entropy_ess": column})
        chart = views.overview_chart(frame, value=column)
        self._charts["overview"] = chart
        widget = self._chart_widgets["overview"]
        _show(widget, chart)
        widget.layout.display = None

    # ---------------------------------------------------------------- exports
    @property
    def charts(self) -> dict:
        """The altair charts shown now, by name (``spectrum``, ``ess_curve``, ...)."""
        return dict(self._charts)

    @property
    def token_view(self) -> views.TokenView:
        """The token view widget."""
        return self._token_view

    @property
    def handle(self):
        """The ``ModelHandle`` of the current model (None for user data)."""
        return getattr(self._source, "handle", None)

    def _headings(self) -> dict:
        d = self._data
        return {
            "spectrum": "Spectrum at the split",
            "ess_curve": "ESS along the sequence",
            "tolerance_vs_entropy": "Tolerance-ESS against entropy-ESS",
            "operator": f"Operator of layer {d.layer}" if d else "Operator",
            "overview": "Average ESS per layer",
        }

    def export_html(self, path) -> pathlib.Path:
        """Write the current state as one standalone HTML file that renders offline."""
        if self._data is None:
            raise RuntimeError(f"Nothing to export: {self.error or 'no data yet'}")
        headings = self._headings()
        charts = {headings[k]: c for k, c in self._charts.items()}
        source = self.model or getattr(self._source, "name", "user data")
        description = (
            f"{source}, layer {self._data.layer}, "
            f"{'mean over ' + self._data.channel + 's' if self.head == MEAN else self._data.channel + ' ' + str(self.head)}, "  # noqa: E501
            f"split i={self.split}, {tolerance_label(self.tol, self.relative)}, "
            f"L = {self._data.length} tokens"
        )
        return views.export_html(
            path,
            charts,
            self._token_view,
            title="Effective state-size explorer",
            description=description,
        )

    def save_charts(self, folder, format: str = "png") -> list[pathlib.Path]:
        """Save every chart shown now as ``folder/<name>.png`` (or ``.svg``)."""
        if format not in ("png", "svg"):
            raise ValueError(f"`format` must be 'png' or 'svg', got {format!r}.")
        folder = pathlib.Path(os.fspath(folder))
        folder.mkdir(parents=True, exist_ok=True)
        return [
            views.save_chart(chart, folder / f"{name}.{format}")
            for name, chart in self._charts.items()
        ]

    # ------------------------------------------------------------ user data
    @classmethod
    def from_source(cls, source, *, title: str | None = None, **kwargs) -> Explorer:
        """An explorer over any source with ``num_layers``, ``num_channels``, ``layer_data``."""
        return cls(_source=source, _title=title, **kwargs)


def threshold_mean(spectra: np.ndarray, tol: float, relative: bool) -> np.ndarray:
    """Mean tolerance-ESS over splits, per channel: ``(C, L-1, K) -> (C,)``."""
    return threshold_ess(spectra, tol, relative).mean(1)


def _show(widget: alt.JupyterChart, chart) -> None:
    """Draw ``chart`` in ``widget``.

    Sets the synced ``spec`` directly instead of ``widget.chart``: the latter
    validates the spec against the vega-lite JSON schema on every change (about
    30 ms per chart here), and the builders in ``views`` always produce valid
    specs. The charts use no selections that Python reads back.
    """
    widget.spec = chart.to_dict(validate=False)


def _placeholder() -> alt.Chart:
    return alt.Chart(pd.DataFrame({"x": []})).mark_point().properties(width=1, height=1)
