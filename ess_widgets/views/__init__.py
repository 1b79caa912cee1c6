"""Views of ESS: altair charts, the token view widget, and static exports.

Every view works on its own from data the user already has (arrays of ESS or
singular values, an operator matrix, token strings); the explorer composes them.

- ``charts``: ``spectrum_chart``, ``ess_curve_chart``, ``tolerance_vs_entropy_chart``,
  ``operator_heatmap``, ``overview_chart`` and the ``*_frame`` tables they show.
- ``token_view``: ``TokenView``, tokens coloured by ESS (an anywidget), and
  ``find_delimiters``.
- ``export``: ``export_html`` (one offline HTML file) and ``save_chart`` (PNG/SVG).
"""

from .charts import (
    channel_frame,
    chart_data,
    enable_offline,
    ess_curve_chart,
    ess_frame,
    operator_heatmap,
    overview_chart,
    spectrum_chart,
    spectrum_frame,
    tolerance_vs_entropy_chart,
)
from .export import export_html, save_chart
from .token_view import TokenView, delimiter_kind, find_delimiters, token_values, token_view_html

__all__ = [
    "spectrum_chart",
    "ess_curve_chart",
    "tolerance_vs_entropy_chart",
    "operator_heatmap",
    "overview_chart",
    "spectrum_frame",
    "ess_frame",
    "channel_frame",
    "chart_data",
    "enable_offline",
    "TokenView",
    "find_delimiters",
    "delimiter_kind",
    "token_values",
    "token_view_html",
    "export_html",
    "save_chart",
]
