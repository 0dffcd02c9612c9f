"""The catalog as one self-contained HTML page: no external file, font or script, a stable anchor per
feature (`#<feature name>`), and a search box that filters the entries in the browser with the terms and
field rules of `search.py` (the page reads its first query from `?q=`)."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from feature_pipelines.catalog.entries import Catalog, CatalogEntry, Signal
from feature_pipelines.catalog.links import anchor
from feature_pipelines.catalog.search import FIELDS, TEXT, field_help, search_terms
from feature_pipelines.catalog.text import deprecation_text, lifecycle_text, uses_rows

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2433;background:#f5f6f8}
header{position:sticky;top:0;background:#1d2433;color:#fff;padding:12px 24px;z-index:1}
header h1{font-size:20px;margin:0 0 6px}
header p{margin:2px 0;font-size:12px;color:#c9cfdb}
#q{width:60%;font-size:16px;padding:6px 10px;border-radius:4px;border:0;margin-top:6px}
#count{margin-left:12px;font-size:14px}
main{padding:12px 24px}
article{background:#fff;border:1px solid #d8dce5;border-radius:6px;margin:0 0 10px;padding:10px 14px}
article:target{outline:3px solid #3d7bfd}
article h2{font-size:16px;margin:0;font-family:ui-monospace,Menlo,Consolas,monospace}
article h2 a{color:inherit;text-decoration:none}
.meta{font-size:13px;color:#4a5366;margin:4px 0}
.badge{display:inline-block;font-size:12px;padding:1px 7px;border-radius:9px;margin-right:4px;background:#e4e7ee}
.pass{background:#d3f2dc;color:#14532d}.warn{background:#fdf0c8;color:#713f12}
.fail{background:#fbd5d5;color:#7f1d1d}.unknown{background:#e4e7ee;color:#4a5366}
.deprecated{background:#fbd5d5;color:#7f1d1d;padding:4px 8px;border-radius:4px;font-size:13px;margin:6px 0}
dl{display:grid;grid-template-columns:120px 1fr;gap:2px 12px;font-size:13px;margin:6px 0 0}
dt{color:#6b7385}dd{margin:0;word-break:break-word}
#none{display:none;padding:24px;font-size:15px}
"""

# The search of search.py, in the browser: the same words, fields and rules (FIELDS is passed in).
_SCRIPT = """
const FIELDS = %(fields)s;
const TEXT = %(text)s;
function parseQuery(query) {
  return query.toLowerCase().split(/\\s+/).filter(Boolean).map(token => {
    const at = token.indexOf(":");
    const field = at < 0 ? "" : token.slice(0, at), value = token.slice(at + 1);
    return at >= 0 && field in FIELDS && value ? [field, value] : [TEXT, token];
  });
}
function matches(terms, [field, value]) {
  const values = terms[field] || [];
  return FIELDS[field] === "exact" ? values.includes(value) : values.some(term => term.includes(value));
}
function apply(query) {
  const words = parseQuery(query);
  let shown = 0;
  const entries = document.querySelectorAll("article.feature");
  for (const entry of entries) {
    const terms = JSON.parse(entry.dataset.terms);
    const visible = words.every(word => matches(terms, word));
    entry.hidden = !visible;
    shown += visible ? 1 : 0;
  }
  document.getElementById("count").textContent = shown + " of " + entries.length + " features";
  document.getElementById("none").style.display = shown ? "none" : "block";
}
const box = document.getElementById("q");
box.value = new URLSearchParams(location.search).get("q") || "";
box.addEventListener("input", () => apply(box.value));
apply(box.value);
"""


def _badge(label: str, signal: Signal) -> str:
    return (f'<span class="badge {signal.state.value}" title="{escape(signal.detail)}">'
            f"{escape(label)} {signal.state.value}</span>")


def _article(entry: CatalogEntry, models_listed: bool) -> str:
    terms = escape(json.dumps(search_terms(entry), separators=(",", ":")), quote=True)
    keys = f" ({', '.join(entry.join_keys)})" if entry.join_keys else ""
    rows = [
        ("definition", entry.definition),
        ("entity", (entry.entity or "none") + keys),
        ("tags", ", ".join(f"{k}={v}" for k, v in entry.tags.items()) or "none"),
        ("reads", ", ".join(str(column) for column in entry.lineage)),
        *uses_rows(entry, models_listed=models_listed),
        ("freshness", str(entry.freshness.signal)),
        ("quality", str(entry.quality)),
        ("drift", str(entry.drift)),
        ("skew", str(entry.skew)),
    ]
    warning = f'<div class="deprecated">{escape(deprecation_text(entry))}</div>' if entry.deprecated else ""
    badges = "".join([
        f'<span class="badge">{escape(lifecycle_text(entry))}</span>',
        _badge("fresh", entry.freshness.signal), _badge("quality", entry.quality), _badge("drift", entry.drift),
        _badge("skew", entry.skew),
    ])
    listed = "".join(f"<dt>{escape(name)}</dt><dd>{escape(value)}</dd>" for name, value in rows)
    return (
        f'<article class="feature" id="{escape(anchor(entry.name))}" data-terms="{terms}">'
        f'<h2><a href="#{escape(anchor(entry.name))}">{escape(entry.name)}</a></h2>'
        f'<div class="meta">{escape(entry.reference)} &middot; {escape(entry.dtype)} &middot; owner '
        f'{escape(entry.owner or "none declared")}</div>'
        f'<div class="meta">{badges}</div>{warning}'
        f'<div class="meta">{escape(entry.description)}</div><dl>{listed}</dl></article>'
    )


def render_page(catalog: Catalog) -> str:
    """The whole page, as one string."""
    script = _SCRIPT % {"fields": json.dumps(FIELDS), "text": json.dumps(TEXT)}
    notes = "".join(f"<p>note: {escape(note)}</p>" for note in catalog.notes)
    lake = escape(f"lake {catalog.lake}" if catalog.lake else "no lake")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Feature catalog</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>Feature catalog</h1><p>{len(catalog.entries)} features; states from {lake} at "
        f"{escape(catalog.generated_at.isoformat())}</p>{notes}"
        f'<input id="q" type="search" autofocus placeholder="search: {escape(field_help())} or free text" '
        f'aria-label="search features"><span id="count"></span></header><main>'
        f'<div id="none">No feature matches this search.</div>'
        + "".join(_article(entry, catalog.models_listed) for entry in catalog.entries)
        + f"</main><script>{script}</script></body></html>"
    )


def write_page(catalog: Catalog, path: Path) -> Path:
    """Write the page to `path` (its folder created), whole: a reader never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(render_page(catalog), encoding="utf-8")
    partial.replace(path)
    return path
