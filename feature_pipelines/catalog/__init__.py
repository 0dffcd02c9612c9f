"""The feature catalog people search: one entry per feature, with its owner, lifecycle, freshness, the raw
columns it reads, who uses it and how it fares (quality, drift, skew), rendered for a terminal and as one
static HTML page.

`entries.py` (the model), `lineage.py` (raw columns), `usage.py` (views, services, training sets, models),
`state.py` (what the lake says), `build.py` (one catalog from all of them), `search.py` (queries),
`text.py` and `html.py` (rendering), `links.py` (where the page lives and its URLs), `cli.py` (the verb).
"""
