"""``Explorer``: choose a model, a layer, a head and a tolerance, and see ESS live.

The widget shell: controls, the sync between traitlets and controls, and the
background thread. What is shown is computed by the pure ``dashboard`` module
from a ``LayerData``; where the spectra come from is ``sources``.

Progressive views: after a change of text, model, layer or mixer the work runs in
one background thread, in the order ``dashboard.next_chunk`` gives: the shown head
at the selected split, a coarse stride of splits (every split for short texts; a
stride predicted to take about a third of a second for long ones), then every split of
every head. Dense operators (attention) stream split by split through the core's
``iter_spectra`` (one check of the maps and one Gram chain per head and step), so a
newer change cancels older work, and a head or split change re-plans it, at the next
split; other sources compute chunks of about half a second. The views are drawn once
when the coarse view is ready (until then the previous layer's views stay, dimmed),
then about every two seconds until the layer is complete. Tolerance, split and head
changes only re-threshold what is cached.
Every state change and every redraw goes through one lock; a generation counter
tells the worker when its job is stale. ``wait()`` blocks until the view is
complete (scripts and tests).
"""

from __future__ import annotations

import functools
import html
import numbers
import os
import pathlib
import threading
import time
from collections import OrderedDict

import altair as alt
import ipywidgets as widgets
import numpy as np
import pandas as pd
import traitlets

from .. import views
from ..adapters import DEFAULT_TEXT, OperatorHandle, builtin_models
from ..core import DEFAULT_TOL, entropy_ess
from ..core._validation import check_flag, check_tol
from ..views._format import tolerance_label, visible_text
from . import dashboard
from .dashboard import MEAN, LayerData, OverviewLayer, ViewState
from .sources import ModelSource, load_handle

__all__ = ["Explorer", "DEFAULT_TEXT", "MEAN"]

# Seconds of spectra for the first view of a layer: with the recording, the checks of
# the maps and one drawing of the views it appears in about a second.
COARSE_SECONDS = 0.35
# Work per chunk where a source does not stream (recurrences): between two cancellation
# checks. Seconds between two redraws while refining, and between two progress updates.
CHUNK_SECONDS = 0.5
REDRAW_SECONDS = 2.0
PROGRESS_SECONDS = 0.25
# Layers kept per explorer, by the bytes of their spectra (the shown one always stays).
CACHE_BYTES = 768 * 2**20
# The overview keeps spectra of every layer at a stride that fits this many bytes.
OVERVIEW_BYTES = 512 * 2**20
OVERVIEW_COARSE_SPLITS = 16
# The tolerance slider's range (a text box next to it shows any value >= 0).
TOL_EXPONENTS = (-10, 1)

_CSS = """
<style>
.essw-explorer { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
.essw-explorer .essw-title { font-size: 16px; font-weight: 600; margin: 2px 0; }
.essw-explorer .essw-error-box { color: #8a1f11; background: #fdecea; padding: 6px 10px;
  border-left: 4px solid #c0392b; white-space: pre-wrap; }
.essw-explorer .essw-busy { color: #8a6d00; }
.essw-explorer .essw-summary { background: #f4f6f8; padding: 4px 10px; border-radius: 4px; }
.essw-explorer .essw-noise-note { color: #8a6d00; padding: 2px 10px; }
.essw-explorer .essw-stale { opacity: 0.35; }
</style>
"""

_offline_ready = threading.Event()


def _ensure_offline() -> None:
    """Inline the vega libraries once per process (no CDN)."""
    if not _offline_ready.is_set():
        views.enable_offline()
        _offline_ready.set()


def _message(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError):  # str(KeyError) adds quotes
        text = str(err.args[0]) if err.args else text
    return f"{type(err).__name__}: {text}"


def _check_int(value, name: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} ({value!r}).")
    return int(value)


class _TraitValueError(traitlets.TraitError, ValueError):
    """A bad trait value: catchable as TraitError or ValueError."""


class Explorer(widgets.VBox):
    """Live ESS of one layer of a language model on a text, in one widget.

    Parameters
    ----------
    model : str or handle, default "smollm2-135m"
        A built-in name (``ess_widgets.builtin_models()``), a hub id, a local
        folder (anything ``ess_widgets.load`` accepts), or a handle it returned.
        The MQAR models (``"mqar-gla-dk8-kv8"``, ...) read MQAR token text.
    text : str
        The input text. While it is the default English text, a model with its own
        input format (MQAR) shows its ``default_text`` instead.
    layer : int, default 0
    head : int, default 0
        Head or channel; ``-1`` shows the mean over the layer's heads (channels).
    tol : float, default 1e-3
        Tolerance of the tolerance-ESS, >= 0.
    relative : bool, default False
        Count singular values above ``tol * sigma_1`` instead of ``tol``.
    split : int, optional
        The split ``i`` (``1 .. L-1``); the middle of the text by default.
    mixer : str, optional
        For blocks with several mixers (``handle.mixers(layer)``): which one; the
        first by default.
    max_tokens : int, default 4096
        Longer texts are refused with a message (the model's context length also
        applies).

    Attributes (traitlets, observable and settable from Python)
    ----------
    model, text, layer, mixer, head, tol, relative, split
        The state above; setting one updates the views. ``model`` holds the name.
    busy : bool
        True while the view is being computed (loading, recording, refining).
    progress : float
        Fraction of the shown layer's (head, split) spectra computed, 0 to 1.
    error : str
        The last error, shown in the widget ("" when all is well).

    Examples
    --------
    >>> ex = Explorer()  # doctest: +SKIP
    >>> ex.tol = 1e-2; ex.layer = 5; ex.head = -1  # doctest: +SKIP
    >>> ex.wait().export_html("explorer.html")  # doctest: +SKIP
    """

    model = traitlets.Unicode("smollm2-135m").tag(sync=True)
    text = traitlets.Unicode(DEFAULT_TEXT).tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    mixer = traitlets.Unicode("").tag(sync=True)
    head = traitlets.Int(0).tag(sync=True)
    tol = traitlets.Float(DEFAULT_TOL).tag(sync=True)
    relative = traitlets.Bool(False).tag(sync=True)
    split = traitlets.Int(None, allow_none=True).tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)
    progress = traitlets.Float(0.0).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        model="smollm2-135m",
        text: str = DEFAULT_TEXT,
        layer: int = 0,
        head: int = 0,
        tol: float = DEFAULT_TOL,
        relative: bool = False,
        split: int | None = None,
        *,
        mixer: str | None = None,
        max_tokens: int = 4096,
        _source=None,
        _title: str | None = None,
    ):
        # check every argument before anything starts
        handles = {}
        if _source is None:
            if isinstance(model, str):
                if not model.strip():
                    raise ValueError("`model` is empty: pass a name such as 'smollm2-135m'.")
                name = model.strip()
            elif isinstance(model, OperatorHandle):
                name = str(model.name or type(model).__name__)
                handles[name] = model
            else:
                raise TypeError(
                    "`model` must be a model name or a handle from ess_widgets.load, got "
                    f"{type(model).__name__}."
                )
            if not isinstance(text, str):
                raise TypeError(f"`text` must be a str, got {type(text).__name__} ({text!r}).")
        layer = _check_int(layer, "layer")
        head = _check_int(head, "head")
        split = _check_int(split, "split", allow_none=True)
        tol = check_tol(tol)
        relative = check_flag(relative, "relative")
        if mixer is not None and not isinstance(mixer, str):
            raise TypeError(f"`mixer` must be a str or None, got {type(mixer).__name__}.")
        max_tokens = _check_int(max_tokens, "max_tokens")
        if max_tokens < 2:
            raise ValueError(f"`max_tokens` must be at least 2, got {max_tokens}.")
        if layer < 0:
            raise ValueError(f"`layer` must be >= 0, got {layer}.")
        if head < MEAN:
            raise ValueError(f"`head` must be -1 (the mean) or a head index >= 0, got {head}.")

        _ensure_offline()
        super().__init__()
        self.add_class("essw-explorer")
        self.max_tokens = max_tokens
        self.last_update_ms = float("nan")
        self.timings: dict = {}  # seconds from the last data change to the coarse/complete view
        self._handles = handles
        self._fixed_source = _source
        self._source = _source
        self._source_key = ("data", id(_source)) if _source is not None else None
        self._auto_text: str | None = None  # a model's own example, put in by the explorer
        self._cache: OrderedDict = OrderedDict()  # (source key, layer, mixer) -> (src, data)
        self._data: LayerData | None = None
        self._charts: dict = {}
        self._seconds_per_cost: dict = {}  # structured? -> measured seconds per cost unit
        # one lock for all state changes and redraws; the worker and the kernel share it
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._generation = 0
        self._view_task = None
        self._overview_task = None
        self._overview_generation = 0
        self._overview_layers: list[OverviewLayer] = []
        self._overview_done = False
        self._thread: threading.Thread | None = None
        self._closed = False
        self._quiet = 0  # > 0 while the explorer itself sets traits (no new job)
        self._pushing = False  # True while controls are set from traits
        self._operator_key = None  # what the operator heatmap shows now

        self._build_controls(_title)
        self._quiet += 1
        try:
            self.model = "" if _source is not None else name
            self.text = "" if _source is not None else text
            self.layer, self.head, self.tol, self.relative = layer, head, tol, relative
            self.split = split
            self.mixer = mixer or ""
        finally:
            self._quiet -= 1
        self._link_controls()
        self._submit_view(new_source=True)

    # ---------------------------------------------------------------- building
    def _build_controls(self, title: str | None) -> None:
        W = widgets
        style = {"description_width": "initial"}
        data_mode = self._fixed_source is not None
        self._title = W.HTML(
            '<div class="essw-title">'
            f"{html.escape(visible_text(title or 'Effective state-size explorer'))}</div>"
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
        self._mixer_dropdown = W.Dropdown(
            options=[("mixer", "")], value="", description="mixer", layout=W.Layout(width="220px")
        )
        self._mixer_dropdown.layout.display = "none"  # shown for blocks with several mixers
        self._head_dropdown = W.Dropdown(
            options=[("head 0", 0)], value=0, description="head", layout=W.Layout(width="260px")
        )
        lo, hi = TOL_EXPONENTS
        self._tol_slider = W.FloatLogSlider(
            value=DEFAULT_TOL,
            base=10,
            min=lo,
            max=hi,
            step=0.1,
            description="tolerance",
            readout=False,
            continuous_update=True,
            style=style,
            layout=W.Layout(width="320px"),
        )
        # the exact value, also outside the slider's range (tol = 0 counts every non-zero value)
        self._tol_text = W.FloatText(value=DEFAULT_TOL, layout=W.Layout(width="110px"))
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
        self._compute_button.on_click(
            lambda _: self._set_from_control("text", self._text_area.value)
        )
        self._status = W.HTML("")
        self._progress_bar = W.FloatProgress(
            value=0.0, min=0.0, max=1.0, description="refining", layout=W.Layout(width="300px")
        )
        self._progress_bar.add_class("essw-progress")
        self._progress_bar.layout.visibility = "hidden"
        self._error_box = W.HTML("")
        self._summary = W.HTML("")

        rows = [W.HTML(_CSS), self._title]
        if not data_mode:
            text_row = W.HBox(
                [self._text_area, self._compute_button], layout=W.Layout(width="100%")
            )
            rows += [model_row, text_row]
        rows += [
            W.HBox([self._layer_slider, self._mixer_dropdown, self._head_dropdown]),
            W.HBox([self._tol_slider, self._tol_text, self._relative_toggle]),
            W.HBox([self._split_slider, self._progress_bar, self._status]),
            self._error_box,
        ]

        self._token_view = views.TokenView()
        self._token_view.observe(self._on_token_click, names="selected")
        self._chart_widgets = {
            name: alt.JupyterChart(_placeholder(), embed_options={"actions": False})
            for name in (*dashboard.CHARTS, "overview")
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
        self._views.layout.display = "none"  # until the first data arrives
        self._overview_button = W.Button(
            description="compute overview (all layers)", icon="th", layout=W.Layout(width="auto")
        )
        self._overview_button.on_click(lambda _: self.compute_overview())
        self._overview_measure = W.ToggleButtons(
            options=["tolerance-ESS", "entropy-ESS"],
            value="tolerance-ESS",
            style={"button_width": "130px"},
        )
        self._overview_measure.observe(lambda _: self._locked(self._show_overview), names="value")
        self._overview_progress = W.FloatProgress(
            value=0.0, min=0.0, max=1.0, layout=W.Layout(width="260px")
        )
        self._overview_progress.add_class("essw-overview-progress")
        self._overview_progress.layout.visibility = "hidden"
        self._overview_status = W.HTML("")
        cw["overview"].layout.display = "none"
        self._overview_box = W.VBox(
            [
                W.HBox(
                    [
                        self._overview_button,
                        self._overview_measure,
                        self._overview_progress,
                        self._overview_status,
                    ]
                ),
                cw["overview"],
            ]
        )
        self.children = [*rows, self._views, self._overview_box]

    # trait -> the controls that show it
    def _controls(self, trait: str) -> list:
        return {
            "layer": [self._layer_slider],
            "mixer": [self._mixer_dropdown],
            "head": [self._head_dropdown],
            "tol": [self._tol_slider, self._tol_text],
            "relative": [self._relative_toggle],
            "split": [self._split_slider],
        }[trait]

    def _link_controls(self) -> None:
        """Two-way sync of traits and controls, by hand: a control may not yet accept a
        trait's value (a head before the layer's heads are known, tol = 0 on a log slider)."""
        for trait in ("layer", "mixer", "head", "tol", "relative", "split"):
            for control in self._controls(trait):
                control.observe(functools.partial(self._on_control, trait), names="value")
        self._model_dropdown.observe(self._on_model_dropdown, names="value")
        self._sync_model_controls()
        self._text_area.value = self.text
        self._push_all()

    def _on_control(self, trait: str, change) -> None:
        with self._lock:
            if self._pushing:
                return
            if trait in ("split", "head", "mixer") and self._data is None:
                return
            value = change["new"]
            if change["owner"] is self._tol_slider:  # 10**-2.0000001 reads as 0.01
                value = float(f"{value:.4g}")
            self._set_from_control(trait, value)

    def _set_from_control(self, trait: str, value) -> None:
        try:
            setattr(self, trait, value)
        except (traitlets.TraitError, TypeError, ValueError) as err:
            self._set_error(err)
            self._push(trait)  # the control goes back to the trait's value

    def _push(self, trait: str) -> None:
        """Show a trait's value on its controls, as far as they can show it."""
        value = getattr(self, trait)
        if value is None:
            return
        with self._lock:
            self._pushing = True
            try:
                for control in self._controls(trait):
                    if isinstance(control, widgets.Dropdown):
                        if value in [v for _, v in control.options]:
                            control.value = value
                    elif isinstance(control, widgets.FloatLogSlider):
                        lo, hi = control.base**control.min, control.base**control.max
                        control.value = min(max(value, lo), hi)  # tol = 0: the left end
                    elif isinstance(control, widgets.FloatText):
                        control.value = value
                    elif isinstance(control, widgets.IntSlider):
                        if control.min <= value <= control.max:
                            control.value = value
                    else:
                        control.value = value
            finally:
                self._pushing = False

    def _push_all(self) -> None:
        for trait in ("layer", "mixer", "head", "tol", "relative", "split"):
            self._push(trait)

    # ------------------------------------------------------------ validation
    @traitlets.validate("tol")
    def _check_tol_trait(self, proposal):
        try:
            return check_tol(proposal["value"])
        except (TypeError, ValueError) as err:
            raise _TraitValueError(str(err)) from None

    @traitlets.validate("layer")
    def _check_layer(self, proposal):
        value = int(proposal["value"])
        source = self._source
        n = source.num_layers if source is not None else None
        if value < 0 or (n is not None and value >= n):
            bound = f"0 .. {n - 1}" if n is not None else ">= 0"
            raise _TraitValueError(f"`layer` must be in {bound}, got {value}.")
        return value

    @traitlets.validate("head")
    def _check_head(self, proposal):
        value = int(proposal["value"])
        data = self._data
        C = data.num_channels if data is not None else None
        if value < MEAN or (C is not None and value >= C):
            top = f"{C - 1}" if C is not None else "C-1"
            raise _TraitValueError(
                f"`head` must be -1 (mean over heads/channels) or in 0 .. {top}, got {value}."
            )
        return value

    @traitlets.validate("split")
    def _check_split(self, proposal):
        value = proposal["value"]
        data = self._data
        if data is None:
            return value
        L = data.length
        if value is None:
            return L // 2
        value = int(value)
        if not 1 <= value <= L - 1:
            raise _TraitValueError(f"`split` must be in 1 .. L-1 = {L - 1}, got {value}.")
        return value

    # ------------------------------------------------------------- observers
    @traitlets.observe("model", "text", "layer", "mixer")
    def _on_data_change(self, change) -> None:
        with self._lock:
            name = change["name"]
            if name in ("layer", "mixer"):
                self._push(name)
            if name == "model":
                self._sync_model_controls()
            if name == "text" and self._text_area.value != change["new"]:
                self._text_area.value = change["new"]
            if self._quiet or not hasattr(self, "_views"):
                return
            self._submit_view(new_source=name in ("model", "text"), strict_mixer=name == "mixer")

    @traitlets.observe("head", "split", "tol", "relative")
    def _on_view_change(self, change) -> None:
        with self._lock:
            self._push(change["name"])
            if self._quiet or not hasattr(self, "_views"):
                return
            self._refresh({change["name"]})
            self._cond.notify_all()  # the worker re-plans for the new head or split

    def _on_token_click(self, change) -> None:
        new = change["new"]
        with self._lock:
            if new >= 1 and not self._quiet and self._data is not None and new != self.split:
                self._set_from_control("split", new)

    def _on_model_dropdown(self, change) -> None:
        if change["new"] and change["new"] != self.model and not self._pushing:
            self._set_from_control("model", change["new"])

    def _load_model_text(self) -> None:
        name = self._model_text.value.strip()
        if name:
            self._set_from_control("model", name)

    def _sync_model_controls(self) -> None:
        self._pushing = True
        try:
            if self.model in self._model_dropdown.options:
                self._model_dropdown.value = self.model
            elif self.model:
                self._model_text.value = self.model
        finally:
            self._pushing = False

    # ------------------------------------------------------------- the worker
    def _submit_view(self, *, new_source: bool, strict_mixer: bool = False) -> None:
        """Start computing the view of the current model, text, layer and mixer.

        ``strict_mixer``: the user chose the mixer, so one the layer lacks is an error
        (after a layer change the first mixer of the new layer is taken instead).
        """
        with self._cond:
            self._generation += 1
            self._view_task = self._view_steps(
                self._generation,
                self.model,
                self.text,
                int(self.layer),
                self.mixer,
                strict_mixer,
            )
            self._submitted = time.perf_counter()
            self.timings = {}
            if new_source and self._fixed_source is None:
                self._cancel_overview()
            self.busy = True
            self._set_status(f"computing layer {self.layer} …")
            if self._data is not None:
                self._views.add_class("essw-stale")
            self._cond.notify_all()
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="essw-explorer", daemon=True
                )
                self._thread.start()

    def _work(self) -> None:
        """The background thread: one step of the view job, else of the overview job."""
        while True:
            with self._cond:
                while self._view_task is None and self._overview_task is None:
                    if self._closed:
                        return
                    self._cond.wait()
                if self._closed:
                    return
                is_view = self._view_task is not None
                task = self._view_task if is_view else self._overview_task
            try:
                next(task)
            except StopIteration:
                self._finish(task, is_view, None)
            except Exception as err:  # shown in the widget, never lost
                self._finish(task, is_view, err)

    def _finish(self, task, is_view: bool, err: BaseException | None) -> None:
        with self._cond:
            if is_view and self._view_task is task:
                self._view_task = None
                if err is not None:
                    self._data = None
                    self._set_error(err)
                self.busy = False
                self._progress_bar.layout.visibility = "hidden"
                self._set_status("")
            elif not is_view and self._overview_task is task:
                self._overview_task = None
                self._overview_progress.layout.visibility = "hidden"
                self._overview_button.disabled = False
                if err is not None:
                    self._overview_status.value = (
                        f'<span class="essw-error">{html.escape(visible_text(_message(err)))}'
                        "</span>"
                    )
                else:
                    self._overview_status.value = ""
            self._cond.notify_all()

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._closed

    def _view_steps(
        self, generation: int, model: str, text: str, layer: int, mixer: str, strict: bool
    ):
        """The view job: source, layer, then chunks of spectra until complete."""
        source = self._ensure_source(model, text)
        yield
        if layer >= source.num_layers:
            raise IndexError(
                f"Layer {layer} is out of range: the model has {source.num_layers} layers "
                f"(0..{source.num_layers - 1})."
            )
        mixers = source.mixers(layer)
        if not mixers:
            raise ValueError(
                f"Layer {layer} has no sequence mixer (an MLP-only block): choose another "
                f"layer ({[k for k in range(source.num_layers) if source.mixers(k)][:8]} ...)."
            )
        if mixer not in mixers:
            if strict and mixer:
                raise ValueError(f"`mixer` {mixer!r} is not in layer {layer}: it has {mixers}.")
            mixer = mixers[0]
        layer_source, data = self._layer(layer, mixer)
        yield
        with self._lock:
            if not self._current(generation):
                return
            self._install(data, mixers, mixer)
        costs = layer_source.costs()
        structured = layer_source.structured
        cached = coarse_reported = data.complete
        last_draw, draw_seconds = time.perf_counter(), 0.0
        last_shown = last_draw
        while True:
            with self._lock:
                if not self._current(generation):
                    return
                state = self._state()
                speed = self._seconds_per_cost.get(structured)
                if not data.coarse and speed is not None:
                    n = data.num_channels if state.head == MEAN else 1
                    stride = dashboard.choose_stride(costs, speed * n, COARSE_SECONDS)
                    data.coarse = tuple(dashboard.stride_splits(data.length, stride))
                shown = state.head
                chunk = dashboard.next_chunk(
                    data.computed,
                    costs,
                    coarse=data.coarse or (state.split,),
                    shown=shown,
                    split=state.split,
                    seconds_per_cost=speed,
                    target_s=CHUNK_SECONDS,
                    channel_cost=layer_source.channel_cost(),
                    streamed=layer_source.streams,
                )
            if chunk is None:
                break
            channels, splits = chunk
            planned = (state.head, state.split)
            for done, values in self._chunk_results(layer_source, channels, splits):
                with self._lock:
                    data.fill(channels, done, values)  # correct for this layer even if stale
                    if not self._current(generation):
                        return
                    state = self._state()
                    coarse_ready = bool(data.coarse) and self._coarse_done(data, state)
                    now = time.perf_counter()
                    if coarse_ready and not coarse_reported:
                        coarse_reported = True
                        self._refresh({"data"})
                        self._shown_drawn()
                        self.timings["coarse_s"] = time.perf_counter() - self._submitted
                    elif now - last_draw >= max(REDRAW_SECONDS, 2 * draw_seconds):
                        self._refresh({"data"})
                        self._shown_drawn()
                    else:
                        now = None
                    if now is not None:  # redrawn: at most a third of the time goes to drawing
                        last_draw = time.perf_counter()
                        draw_seconds = last_draw - now
                    if now is not None or time.perf_counter() - last_shown >= PROGRESS_SECONDS:
                        # a streamed chunk fills split by split: a few bar updates a second
                        self._show_progress(data)
                        last_shown = time.perf_counter()
                    # a new head or split comes first: plan again (a streamed chunk stops here)
                    replan = (state.head, state.split) != planned
                yield
                if replan:
                    break
        with self._lock:
            if not self._current(generation):
                return
            if not cached:  # a layer complete from the cache was drawn by _install
                self._refresh({"data"})
            now = time.perf_counter()
            self.timings.setdefault("coarse_s", now - self._submitted)
            self.timings["complete_s"] = now - self._submitted
            self._show_progress(data)

    def _chunk_results(self, layer_source, channels: list[int], splits: list[int]):
        """Yield ``(splits_done, values)`` of a chunk, values ``(len(channels), n, K)``.

        A streaming source (the dense path) yields split by split, so the job can be
        cancelled or re-planned between any two splits and one chunk pays for one Gram
        chain; other sources compute the chunk in one call. The speed estimate is
        updated when a chunk completes.
        """
        if not layer_source.streams:
            t0 = time.perf_counter()
            values = layer_source.spectra(channels, splits)
            self._measured(layer_source, channels, splits, time.perf_counter() - t0)
            yield splits, values
            return
        stream = layer_source.iter_spectra(channels, splits)
        done, busy = [], 0.0
        while True:
            t0 = time.perf_counter()
            item = next(stream, None)
            busy += time.perf_counter() - t0
            if item is None:
                break
            done.append(item[0])
            yield [item[0]], item[1][:, None, :]
        self._measured(layer_source, channels, done, busy)

    def _shown_drawn(self) -> None:
        """The views show the current layer: no longer dimmed (see ``_install``)."""
        self._views.remove_class("essw-stale")
        self._views.layout.display = None

    @staticmethod
    def _coarse_done(data: LayerData, state: ViewState) -> bool:
        rows = np.asarray(data.coarse) - 1
        channels = slice(None) if state.head == MEAN else [state.head]
        return bool(data.computed[channels][:, rows].all())

    def _ensure_source(self, model: str, text: str):
        """The source of the current model and text (loads the model the first time)."""
        if self._fixed_source is not None:
            return self._fixed_source
        with self._lock:
            if self._source is not None and self._source_key == (model, text):
                return self._source
        if not model.strip():
            raise ValueError("No model: choose a built-in model or type a hub id or folder.")
        self._set_status(f"loading {model} …")
        handle = self._handles.get(model) or load_handle(model.strip())
        text = self._model_text_for(handle, text)
        source = ModelSource(handle, text, max_tokens=self.max_tokens)
        with self._lock:
            self._source, self._source_key = source, (model, text)
        return source

    def _model_text_for(self, handle, text: str) -> str:
        """The model's own example text (``handle.default_text``, e.g. an MQAR sequence)
        while the text is the default one or another model's example."""
        own = getattr(handle, "default_text", None) or DEFAULT_TEXT
        with self._lock:
            if text != own and text in (DEFAULT_TEXT, self._auto_text):
                text = own
                self._quiet += 1
                try:
                    self.text = own
                finally:
                    self._quiet -= 1
            self._auto_text = None if own == DEFAULT_TEXT else own
        return text

    def _layer(self, layer: int, mixer: str):
        """``(LayerSource, LayerData)`` of a layer's mixer, from the cache or new."""
        key = (self._source_key, layer, mixer)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        self._set_status(f"recording layer {layer} …")
        layer_source = self._source.layer(layer, mixer)
        data = layer_source.new_data()
        with self._lock:
            self._cache[key] = (layer_source, data)
            total = sum(d.nbytes for _, d in self._cache.values())
            while total > CACHE_BYTES and len(self._cache) > 1:
                _, (_, old) = self._cache.popitem(last=False)
                total -= old.nbytes
        return layer_source, data

    def _install(self, data: LayerData, mixers: list[str], mixer: str) -> None:
        """Make ``data`` the shown layer: control ranges, clamped head and split, views."""
        source = self._source
        self._quiet += 1
        self._pushing = True
        try:
            self._data = data
            L, C = data.length, data.num_channels
            self._layer_slider.max = max(source.num_layers - 1, 0)
            self._layer_slider.disabled = source.num_layers < 2
            self._mixer_dropdown.options = [(m, m) for m in mixers]
            self._mixer_dropdown.layout.display = None if len(mixers) > 1 else "none"
            name = data.channel_name
            self._head_dropdown.options = [(f"mean over {name}s", MEAN)] + [
                (f"{name} {c}", c) for c in range(C)
            ]
            self._head_dropdown.description = name
            self._split_slider.max = L - 1
        finally:
            self._pushing = False
        try:
            self.mixer = mixer
            if self.head >= C:
                self.head = C - 1
            split = self.split
            self.split = L // 2 if split is None else min(max(int(split), 1), L - 1)
            self._push_all()
        finally:
            self._quiet -= 1
        if self.error:
            self._clear_error()
        if data.computed.any():
            self._shown_drawn()
            self._redraw()
        # else the views are drawn once, when the coarse view is ready (dimmed until then)
        self._show_progress(data)

    def _show_progress(self, data: LayerData) -> None:
        self.progress = data.progress
        self._progress_bar.value = data.progress
        done = data.complete
        self._progress_bar.layout.visibility = "hidden" if done else "visible"
        self._set_status("" if done else f"refining layer {data.layer}: {data.progress:.0%}")

    # ------------------------------------------------------------------ views
    def _state(self) -> ViewState:
        return ViewState(
            head=int(self.head), split=int(self.split), tol=float(self.tol), relative=self.relative
        )

    def _redraw(self) -> None:
        self._refresh(None)

    def _refresh(self, changed: set[str] | None) -> None:
        """Re-threshold the shown spectra and redraw the views that depend on ``changed``."""
        with self._lock:
            d = self._data
            if d is None or self.split is None:
                return
            t0 = time.perf_counter()
            try:
                state = self._state()
                numbers_ = dashboard.view_numbers(d, state)
                # the heatmap shows one channel's operator: redraw it only when that changes
                # (with head = -1 the channel closest to the mean can change as data refines)
                operator_key = (
                    id(d),
                    d.layer,
                    d.mixer,
                    numbers_["shown_head"],
                    state.split,
                    state.head == MEAN,
                )
                names = dashboard.charts_to_build(changed) - {"operator"}
                if operator_key != self._operator_key:
                    names.add("operator")
                charts = dashboard.build_charts(d, state, numbers_, names)
                if "operator" in charts:
                    self._operator_key = operator_key
                for key, chart in charts.items():
                    self._charts[key] = chart
                    _show(self._chart_widgets[key], chart)
                if changed is None or changed & {"head", "tol", "relative", "data"}:
                    self._token_view.update_ess(
                        numbers_["curve_tolerance"],
                        tokens=list(d.tokens),
                        value_label=dashboard.token_label(d, state, numbers_),
                    )
                if self._token_view.selected != state.split:
                    self._token_view.selected = state.split
                self._summary.value = dashboard.summary_html(d, state, numbers_)
                if (changed is None or changed & {"tol", "relative"}) and self._overview_layers:
                    self._show_overview()
            except Exception as err:
                self._set_error(err)
                return
            if self.error:
                self._clear_error()
            self.last_update_ms = (time.perf_counter() - t0) * 1e3

    def current(self) -> dict:
        """What the views show now, as arrays (see ``dashboard.view_numbers``).

        While the view refines, values not computed yet are NaN; ``wait()`` first for
        the complete view.
        """
        with self._lock:
            d = self._data
            if d is None or self.split is None:
                raise RuntimeError(
                    f"Nothing to show: {self.error or 'the view is being computed (wait())'}"
                )
            return dashboard.view_numbers(d, self._state())

    def layer_data(self) -> LayerData:
        """The shown layer's ``LayerData`` (spectra as far as computed)."""
        with self._lock:
            if self._data is None:
                raise RuntimeError(
                    f"No layer shown: {self.error or 'the view is being computed (wait())'}"
                )
            return self._data

    def wait(self, timeout: float | None = None, *, overview: bool = False) -> Explorer:
        """Block until the current view is complete (or failed: see ``error``).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most; a TimeoutError after that.
        overview : bool, default False
            Also wait for the overview, if one is being computed.

        Returns
        -------
        Explorer
            ``self``, so that ``ex.wait().current()`` reads the complete view.
        """
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        with self._cond:
            while self._view_task is not None or (overview and self._overview_task is not None):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"The view was not complete after timeout={timeout} s "
                        f"({self.progress:.0%} of layer {self.layer} computed)."
                    )
                self._cond.wait(remaining)
        return self

    def close(self) -> None:
        """Stop the background thread and close the widget."""
        if not hasattr(self, "_cond"):  # the constructor refused its arguments
            return
        with self._cond:
            self._closed = True
            self._view_task = self._overview_task = None
            self._cond.notify_all()
        super().close()

    # ------------------------------------------------------------ messages
    def _set_status(self, message: str) -> None:
        self._status.value = (
            f'<span class="essw-busy">⏳ {html.escape(visible_text(message))}</span>'
            if message
            else ""
        )

    def _set_error(self, err: BaseException | str) -> None:
        text = err if isinstance(err, str) else _message(err)
        with self._lock:
            self.error = text
            self._error_box.value = (
                f'<div class="essw-error-box" role="alert">{html.escape(visible_text(text))}</div>'
            )
            if self._data is None:
                self._views.layout.display = "none"  # never leave views of another setting
            self._token_view.error = text

    def _clear_error(self) -> None:
        self.error = ""
        self._error_box.value = ""
        self._views.layout.display = None
        self._token_view.error = ""

    def _locked(self, fn) -> None:
        with self._lock:
            fn()

    # --------------------------------------------------------------- overview
    def compute_overview(self, *, wait: bool = False) -> pd.DataFrame | None:
        """Average ESS of every layer, mixer and head, computed in the background.

        A coarse pass (about 16 splits per head) shows first, then the means refine
        to every split (or the finest stride whose spectra fit in memory). A change
        of model or text cancels it; the progress bar under the views follows it.

        Parameters
        ----------
        wait : bool, default False
            Block until it is complete and return the table.

        Returns
        -------
        pandas.DataFrame or None
            With ``wait``: columns ``layer``, ``mixer``, ``channel``, ``tolerance_ess``
            (mean over splits at the current tolerance), ``entropy_ess``, ``splits``.
        """
        with self._cond:
            self._overview_generation += 1
            self._overview_layers = []
            self._overview_done = False
            self._overview_task = self._overview_steps(self._overview_generation)
            self._overview_button.disabled = True
            self._overview_progress.value = 0.0
            self._overview_progress.layout.visibility = "visible"
            self._cond.notify_all()
        self._ensure_thread()
        if wait:
            self.wait(overview=True)
            return self.overview
        return None

    @property
    def overview(self) -> pd.DataFrame | None:
        """The overview table as far as computed (``compute_overview``), or None."""
        with self._lock:
            if not self._overview_layers:
                return None
            return dashboard.overview_table(self._overview_layers, self.tol, self.relative)

    def _cancel_overview(self) -> None:
        self._overview_generation += 1
        self._overview_task = None
        self._overview_layers = []
        self._overview_button.disabled = False
        self._overview_progress.layout.visibility = "hidden"
        self._chart_widgets["overview"].layout.display = "none"
        self._charts.pop("overview", None)

    def _overview_steps(self, generation: int):
        """The overview job: every (layer, mixer) at a coarse stride, then finer."""
        source = self._ensure_source(self.model, self.text)
        pairs = [(k, m) for k in range(source.num_layers) for m in source.mixers(k)]
        total_steps = 2 * len(pairs)
        step = 0
        for pass_index, n_splits in enumerate((OVERVIEW_COARSE_SPLITS, None)):
            for k, (layer, mixer) in enumerate(pairs):
                layer_source, data = self._layer(layer, mixer)
                L, C, K = layer_source.length, layer_source.num_channels, layer_source.width
                if n_splits is not None:
                    stride = max((L - 1) // n_splits, 1)
                else:  # the finest stride whose spectra of every layer fit the budget
                    per_split = 8 * C * K * len(pairs)
                    stride = max(1, -(-(per_split * (L - 1)) // OVERVIEW_BYTES))
                splits = dashboard.stride_splits(L, stride)
                rows = np.asarray(splits) - 1
                if data.computed[:, rows].all():  # the view has them already
                    values = data.spectra[:, rows]
                else:
                    values = yield from self._overview_layer(generation, layer_source, splits)
                    if values is None:
                        return
                item = OverviewLayer(
                    layer=layer,
                    mixer=mixer,
                    channel_name=layer_source.channel_name,
                    splits=np.asarray(splits),
                    spectra=values,
                    entropy=entropy_ess(values).numpy(),
                )
                step += 1
                with self._lock:
                    if generation != self._overview_generation:
                        return
                    if pass_index == 0:
                        self._overview_layers.append(item)
                    else:
                        self._overview_layers[k] = item
                    self._overview_progress.value = step / total_steps
                    self._overview_status.value = html.escape(
                        f"{'coarse' if pass_index == 0 else 'refining'}: "
                        f"layer {layer + 1} of {source.num_layers}"
                    )
                    self._show_overview()
                yield

    def _overview_layer(self, generation: int, layer_source, splits: list[int]):
        """Spectra ``(C, n, K)`` of every channel at ``splits``, in chunks (a generator:
        returns None when cancelled)."""
        L, C = layer_source.length, layer_source.num_channels
        rows = np.asarray(splits) - 1
        computed = np.ones((C, L - 1), dtype=bool)
        computed[:, rows] = False
        costs = layer_source.costs()
        spectra = np.zeros((C, L - 1, layer_source.width))
        structured = layer_source.structured
        while True:
            chunk = dashboard.next_chunk(
                computed,
                costs,
                coarse=splits,
                shown=MEAN,
                split=splits[0],
                seconds_per_cost=self._seconds_per_cost.get(structured),
                target_s=CHUNK_SECONDS,
                channel_cost=layer_source.channel_cost(),
            )
            if chunk is None:
                return spectra[:, rows]
            channels, chunk_splits = chunk
            t0 = time.perf_counter()
            values = layer_source.spectra(channels, chunk_splits)
            self._measured(layer_source, channels, chunk_splits, time.perf_counter() - t0)
            width = min(values.shape[-1], spectra.shape[-1])
            spectra[np.ix_(channels, np.asarray(chunk_splits) - 1)] = 0.0
            spectra[np.ix_(channels, np.asarray(chunk_splits) - 1, np.arange(width))] = values[
                ..., :width
            ]
            computed[np.ix_(channels, np.asarray(chunk_splits) - 1)] = True
            with self._lock:
                if generation != self._overview_generation:
                    return None
            yield

    def _measured(self, layer_source, channels, splits, elapsed: float) -> None:
        """Update the speed estimate (seconds per unit of ``split_costs``)."""
        costs = layer_source.costs()
        cost = len(channels) * (layer_source.channel_cost() + costs[np.asarray(splits) - 1].sum())
        measured = elapsed / max(cost, 1e-300)
        with self._lock:
            old = self._seconds_per_cost.get(layer_source.structured)
            self._seconds_per_cost[layer_source.structured] = (
                measured if old is None else 0.5 * old + 0.5 * measured
            )

    def _show_overview(self) -> None:
        table = dashboard.overview_table(self._overview_layers, self.tol, self.relative)
        if table.empty:
            return
        chart = dashboard.overview_chart(
            table, measure=self._overview_measure.value, tol=self.tol, relative=self.relative
        )
        self._charts["overview"] = chart
        widget = self._chart_widgets["overview"]
        _show(widget, chart)
        widget.layout.display = None

    # ---------------------------------------------------------------- exports
    @property
    def charts(self) -> dict:
        """The altair charts shown now, by name (``spectrum``, ``ess_curve``, ...)."""
        with self._lock:
            return dict(self._charts)

    @property
    def token_view(self) -> views.TokenView:
        """The token view widget."""
        return self._token_view

    @property
    def handle(self):
        """The loaded model's handle (None for user data or before it is loaded)."""
        return getattr(self._source, "handle", None)

    def export_html(self, path) -> pathlib.Path:
        """Write the current state as one standalone HTML file that renders offline.

        Parameters
        ----------
        path : str or path-like
            A file name ending in ``.html`` or ``.htm``.
        """
        with self._lock:
            if self._data is None:
                raise RuntimeError(f"Nothing to export: {self.error or 'no data yet (wait())'}")
            d = self._data
            state = self._state()
            numbers_ = dashboard.view_numbers(d, state)
            headings = {
                "spectrum": "Spectrum at the split",
                "ess_curve": "ESS along the sequence",
                "tolerance_vs_entropy": "Tolerance-ESS against entropy-ESS",
                "operator": f"Operator of layer {d.layer}",
                "overview": "Average ESS per layer",
            }
            charts = {headings[k]: c for k, c in self._charts.items()}
            source = self.model or getattr(self._source, "name", "user data")
            who = dashboard.who_label(d, state, numbers_["shown_head"])
            description = (
                f"{source}, layer {d.layer} ({d.mixer}), {who}, split i={state.split}, "
                f"{tolerance_label(state.tol, state.relative)}, L = {d.length} tokens"
            )
            if not d.complete:
                description += f" (refining: {d.progress:.0%} of the spectra computed)"
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
            for name, chart in self.charts.items()
        ]

    # ------------------------------------------------------------ user data
    @classmethod
    def from_source(cls, source, *, title: str | None = None, **kwargs) -> Explorer:
        """An explorer over a source (``sources.ArraySource`` or one like it)."""
        return cls(_source=source, _title=title, **kwargs)


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
