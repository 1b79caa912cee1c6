"""Static exports: one standalone HTML file that renders offline, and PNG/SVG charts.

The HTML file inlines everything it needs: the vega, vega-lite and vega-embed
libraries (bundled by vl-convert-python, about 0.9 MB), the chart specs, and the
token view as escaped static HTML with its CSS. Opening it makes no request.
"""

from __future__ import annotations

import functools
import html
import json
import os
import pathlib
from collections.abc import Mapping

import altair as alt
import vl_convert as vlc

from ._format import visible_text
from .token_view import TokenView, token_view_html

__all__ = ["export_html", "save_chart", "vega_bundle"]

_TOKEN_CSS = pathlib.Path(__file__).parent / "static" / "token_view.css"

_PAGE_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #222222; background: #ffffff; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 15px; margin: 20px 0 6px; }
.essw-description { color: #555555; margin: 0 0 12px; }
.essw-charts { display: flex; flex-wrap: wrap; gap: 16px 32px; align-items: flex-start; }
.essw-chart-error { color: #8a1f11; background: #fdecea; padding: 8px; }
"""

_EMBED_SCRIPT = """
(function () {
  const specs = JSON.parse(document.getElementById("essw-specs").textContent);
  specs.forEach(function (spec, k) {
    const target = document.getElementById("essw-chart-" + k);
    vegaEmbed(target, spec, { renderer: "svg", actions: false }).catch(function (err) {
      const box = document.createElement("div");
      box.className = "essw-chart-error";
      box.textContent = "This chart could not be drawn: " + err;
      target.appendChild(box);
      console.error(err);
    });
  });
})();
"""


def _vl_version() -> str | None:
    """The vega-lite version altair writes (``"6.4"``), if vl-convert has it."""
    major_minor = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    return major_minor if major_minor in vlc.get_vegalite_versions() else None


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """The vega + vega-lite + vega-embed JavaScript, one classic script (globals ``vegaEmbed``...).

    Built once per process by ``vl_convert.javascript_bundle`` (about 1 s).
    """
    bundle = vlc.javascript_bundle(vl_version=_vl_version())
    # Nothing may close the inline <script> early.
    return bundle.replace("</script", "<\\/script").replace("<!--", "<\\!--")


def _script_json(obj) -> str:
    """JSON safe inside <script type="application/json">: no '<', '>' or '&' left raw."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def export_html(
    path,
    charts=(),
    token_view=None,
    *,
    title: str = "Effective state-size report",
    description: str | None = None,
) -> pathlib.Path:
    """Write one standalone HTML file with charts and a token view; it renders offline.

    Parameters
    ----------
    path : str or path-like
        Where to write; must end in ``.html`` or ``.htm``.
    charts : sequence of altair charts, or mapping heading -> chart
        Drawn in order with vega-embed (SVG renderer), every library inlined.
    token_view : TokenView or mapping, optional
        A ``TokenView`` (its current state), or keyword arguments of
        ``token_view_html``; written as escaped static HTML.
    title, description : str
        Page heading and an optional line under it.

    Returns
    -------
    pathlib.Path of the written file.

    Raises
    ------
    ValueError
        ``path`` is empty, a folder, or does not end in ``.html``/``.htm``.
    """
    path = _html_path(path)
    items = list(charts.items()) if isinstance(charts, Mapping) else [(None, c) for c in charts]
    specs = []
    for _, chart in items:
        if not hasattr(chart, "to_dict"):
            raise TypeError(f"`charts` must hold altair charts, got {type(chart).__name__}.")
        specs.append(chart.to_dict())

    def esc(text) -> str:  # untrusted text: no raw control characters, then escaped
        return html.escape(visible_text(text))

    body = [f"<h1>{esc(title)}</h1>"]
    if description:
        body.append(f'<p class="essw-description">{esc(description)}</p>')
    if token_view is not None:
        if isinstance(token_view, TokenView):
            tokens_html = token_view.to_html()
        elif isinstance(token_view, Mapping):
            tokens_html = token_view_html(**token_view)
        else:
            raise TypeError(
                "`token_view` must be a TokenView or a mapping of token_view_html arguments, "
                f"got {type(token_view).__name__}."
            )
        body.append(
            f'<section class="essw-export-tokens"><h2>Token-wise ESS</h2>{tokens_html}</section>'
        )
    if specs:
        body.append('<section class="essw-charts">')
        for k, (heading, _) in enumerate(items):
            h = f"<h2>{esc(str(heading))}</h2>" if heading else ""
            body.append(f'<div>{h}<div id="essw-chart-{k}" class="essw-chart"></div></div>')
        body.append("</section>")
    scripts = ""
    if specs:
        scripts = (
            f"<script>{vega_bundle()}</script>\n"
            f'<script type="application/json" id="essw-specs">{_script_json(specs)}</script>\n'
            f"<script>{_EMBED_SCRIPT}</script>"
        )
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title>",
            f"<style>{_PAGE_CSS}\n{_TOKEN_CSS.read_text(encoding='utf-8')}</style>",
            "</head>",
            "<body>",
            *body,
            scripts,
            "</body>",
            "</html>",
        ]
    )
    path.write_text(page, encoding="utf-8")
    return path


def _html_path(path) -> pathlib.Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or path-like, got {type(path).__name__}.")
    text = os.fspath(path)
    if not str(text).strip():
        raise ValueError("`path` is empty: pass a file name such as 'explorer.html'.")
    out = pathlib.Path(text)
    if out.is_dir():
        raise ValueError(f"`path` {text!r} is a folder: pass a file name such as 'explorer.html'.")
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(
            f"`path` must end in .html or .htm, got {out.name!r}. For a PNG or SVG of one "
            "chart use save_chart(chart, path)."
        )
    return out


def save_chart(chart, path, *, scale: float = 2.0) -> pathlib.Path:
    """Save one chart as ``.png`` or ``.svg`` (by the suffix of ``path``), offline.

    Uses vl-convert, as altair's ``chart.save`` does for these formats; ``scale``
    multiplies the pixel size of a PNG.
    """
    path = pathlib.Path(os.fspath(path))
    spec = chart.to_dict() if hasattr(chart, "to_dict") else chart
    suffix = path.suffix.lower()
    if suffix == ".png":
        path.write_bytes(vlc.vegalite_to_png(spec, scale=scale, vl_version=_vl_version()))
    elif suffix == ".svg":
        path.write_text(vlc.vegalite_to_svg(spec, vl_version=_vl_version()), encoding="utf-8")
    else:
        raise ValueError(
            f"`path` must end in .png or .svg, got {path.name!r}. For an HTML page use "
            "export_html(path, charts=[chart])."
        )
    return path
