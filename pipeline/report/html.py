"""HTML building blocks: escaping, tables, the page shell and the inlined Vega bundle.

Every string that reaches a page goes through :func:`esc` unless it is a
:class:`Markup` built here from escaped parts. Chart specs are embedded as
JSON in a ``<script type="application/json">`` element with ``<``, ``>`` and
``&`` written as ``\\u003c``-style escapes, so no user text can close the
element. The Vega, Vega-Lite and vega-embed JavaScript (from
``vl_convert.javascript_bundle``) is inlined once per page that has charts;
a Content-Security-Policy forbids the page any network request.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import altair as alt
import vl_convert

__all__ = ["Markup", "esc", "link", "table", "page", "vega_bundle", "spec_json", "CSP"]

logger = logging.getLogger(__name__)

#: No request may leave the page: inline scripts and styles only.
#: ('unsafe-eval': Vega compiles its expressions with ``Function``.)
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; base-uri 'none'; form-action 'none'"
)

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; padding: 1rem 1.5rem 3rem; max-width: 1100px; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
h3 { font-size: 1.05rem; margin-top: 1.6rem; }
p.meta, .note { color: #555; font-size: .9rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .9rem; display: block; max-width: 100%;
        overflow-x: auto; }
th, td { border: 1px solid #d0d0d0; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.flag td { background: #fff4e0; }
.status-matched { color: #14622b; }
.status-problem { color: #9a1c1c; font-weight: 600; }
.empty { color: #666; font-style: italic; }
.chart { margin: .5rem 0 1rem; min-height: 60px; }
.run { border-top: 1px dashed #ccc; margin-top: 1.5rem; }
nav a { margin-right: 1rem; }
code { background: #f5f5f5; padding: 0 .2rem; }
"""

_EMBED = """(function () {
  var specs = JSON.parse(document.getElementById("chart-specs").textContent);
  Object.keys(specs).forEach(function (id) {
    var el = document.getElementById(id);
    vegaEmbed(el, specs[id], {actions: false, mode: "vega-lite", renderer: "svg"})
      .catch(function (err) { el.textContent = "This chart could not be drawn: " + err; });
  });
})();"""


class Markup(str):
    """A string that is already HTML (built from escaped parts); :func:`esc` passes it through."""


def esc(value: Any) -> Markup:
    """``value`` as escaped HTML text; None and NaN become an em dash."""
    if isinstance(value, Markup):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Markup("&mdash;")
    return Markup(html.escape(str(value), quote=True))


def link(href: str, text: Any) -> Markup:
    """An ``<a>`` element; ``href`` must be a relative link built by this package."""
    return Markup(f'<a href="{html.escape(href, quote=True)}">{esc(text)}</a>')


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    numeric: Iterable[int] = (),
    row_classes: Sequence[str] | None = None,
    empty: str = "None.",
) -> Markup:
    """An HTML table; every cell is escaped unless it is :class:`Markup`.

    Parameters
    ----------
    headers
        Column titles (with their units).
    rows
        Cell values.
    numeric
        Indexes of right-aligned columns.
    row_classes
        A CSS class per row (``""`` for none).
    empty
        Text shown instead of an empty table.
    """
    rows = list(rows)
    if not rows:
        return Markup(f'<p class="empty">{esc(empty)}</p>')
    num = set(numeric)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        klass = row_classes[i] if row_classes else ""
        cells = "".join(
            f'<td class="num">{esc(v)}</td>' if j in num else f"<td>{esc(v)}</td>" for j, v in enumerate(row)
        )
        body.append(f'<tr class="{klass}">{cells}</tr>' if klass else f"<tr>{cells}</tr>")
    return Markup(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """The Vega + Vega-Lite + vega-embed JavaScript, self-contained, for one ``<script>``.

    The Vega-Lite version matches the schema Altair writes. Built once per
    process (about 3 s), then cached.
    """
    wanted = alt.SCHEMA_VERSION.lstrip("v").rsplit(".", 1)[0]
    version = wanted if wanted in vl_convert.get_vegalite_versions() else None
    js = vl_convert.javascript_bundle(vl_version=version)
    # Nothing in a classic script may close the element early.
    return re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE)


def spec_json(specs: dict[str, dict[str, Any]]) -> str:
    """Chart specs as JSON that is safe inside a ``<script>`` element."""
    text = json.dumps(specs, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page(
    *,
    title: str,
    body: Sequence[str],
    generated_utc: datetime,
    specs: dict[str, dict[str, Any]] | None = None,
    meta: dict[str, str] | None = None,
) -> str:
    """A complete, self-contained HTML document.

    Parameters
    ----------
    title
        The page title (escaped here).
    body
        HTML fragments (already escaped, e.g. :class:`Markup`).
    generated_utc
        When the report was generated (shown on the page).
    specs
        Vega-Lite specs by the ``id`` of the ``<div>`` each one fills; when
        given, the JavaScript bundle is inlined once.
    meta
        Extra ``<meta name=... content=...>`` tags, early in the ``<head>``
        (a page's content key, read back without parsing the page).
    """
    stamp = generated_utc.strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        *(f'<meta name="{esc(name)}" content="{esc(value)}">' for name, value in (meta or {}).items()),
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="pipeline">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        *body,
        f'<footer><p class="meta">Generated {esc(stamp)}. This page is self-contained and works offline.</p></footer>',
    ]
    if specs:
        parts += [
            f'<script type="application/json" id="chart-specs">{spec_json(specs)}</script>',
            f"<script>{vega_bundle()}</script>",
            f"<script>{_EMBED}</script>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
