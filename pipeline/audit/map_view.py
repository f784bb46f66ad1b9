"""The report's coverage table and 2-D map of the vectors: an inline SVG, one dot per mapped
row coloured by split, its id, split and uniqueness on hover, and for a spread of dots the
thumbnail of its file (embedded, so the page still needs nothing beside it)."""

from __future__ import annotations

import html
import json

import numpy as np

from pipeline.audit.report import checked_source, thumbnail

MAP_THUMBS = 150           # dots that carry a thumbnail (the page grows ~5 KB per thumbnail)
WIDTH, HEIGHT, PAD = 900, 520, 16
COLOURS = {"train": "#4c72b0", "val": "#dd8452", "test": "#c44e52"}
OTHER = "#8c8c8c"

# The thumbnail is made an <img> only on hover: an empty <img> waiting for a source would be a
# broken image on the page until then.
SCRIPT = """<script>(function(){var t=JSON.parse(document.getElementById('map-thumbs').textContent);
var pop=document.getElementById('map-pop');document.querySelectorAll('#map circle').forEach(function(c){
c.addEventListener('mouseenter',function(e){var s=t[c.dataset.i];if(!s)return;var im=new Image();
im.src=s;im.width=120;im.alt=c.textContent;pop.replaceChildren(im);pop.style.display='block';
pop.style.left=(e.pageX+12)+'px';pop.style.top=(e.pageY+12)+'px';});
c.addEventListener('mouseleave',function(){pop.style.display='none';});});})();</script>"""


def _esc(value) -> str:
    return html.escape(str(value))


def coverage_table(coverage: dict) -> str:
    if not coverage:
        return ("<p class='meta'>no split besides train to compare (or no train rows)</p>")
    head = ("<table><tr><th>split</th><th>rows</th><th>train rows with a neighbour in it</th>"
            "<th>expected if spread like train</th><th>coverage</th>"
            "<th>its rows with a train neighbour</th></tr>")
    body = "".join(
        f"<tr><td>{_esc(name)}</td><td>{c['rows']}</td><td>{c['covered_train_share']:.1%}</td>"
        f"<td>{c['expected_share']:.1%}</td><td><b>{c['coverage'] or 0:.2f}</b></td>"
        f"<td>{c['with_train_neighbour']:.1%}</td></tr>" for name, c in coverage.items())
    return head + body + "</table>"


def map_section(xy, method: str, ids: list, splits: np.ndarray, unique: np.ndarray,
                coverage: dict, data_root) -> str:
    """The HTML of the coverage table and (when `xy` is given) the map."""
    parts = ["<h2>Split coverage</h2><p class='meta'>does each split cover the training "
             "distribution? coverage about 1: yes; well below 1: it misses regions of the "
             "training rows (read from the neighbour graph)</p>", coverage_table(coverage)]
    if xy is None or not len(ids):
        return "\n".join(parts)
    xy = np.asarray(xy, dtype=np.float64)
    low, high = xy.min(axis=0), xy.max(axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    px = PAD + (xy - low) / span * np.array([WIDTH - 2 * PAD, HEIGHT - 2 * PAD])
    with_thumb = set(np.linspace(0, len(ids) - 1, min(len(ids), MAP_THUMBS)).astype(int).tolist())
    thumbs, dots = {}, []
    for i, (row_id, split) in enumerate(zip(ids, splits)):
        if i in with_thumb and checked_source(data_root, row_id)[0] is not None:
            thumbs[str(i)] = thumbnail(data_root, row_id)
        dots.append(f"<circle cx='{px[i, 0]:.1f}' cy='{HEIGHT - px[i, 1]:.1f}' r='3.2' "
                    f"fill='{COLOURS.get(split, OTHER)}' data-i='{i}'><title>{_esc(row_id)} "
                    f"({_esc(split)}), uniqueness {unique[i]:.2f}</title></circle>")
    legend = " ".join(f"<span style='color:{COLOURS.get(s, OTHER)}'>&#9679; {_esc(s)}</span>"
                      for s in sorted(set(np.asarray(splits).tolist())))
    parts += [f"<h2>Map of the vectors ({_esc(method)}, {len(ids)} rows)</h2>"
              f"<p class='meta'>{legend}; hover a dot for its id (and, for "
              f"{len(thumbs)} of them, its thumbnail)</p>",
              f"<svg id='map' width='{WIDTH}' height='{HEIGHT}' style='border:1px solid #eee'>"
              + "".join(dots) + "</svg>",
              "<div id='map-pop' style='display:none;position:absolute;border:1px solid #999;"
              "background:#fff;pointer-events:none'></div>",
              "<script type='application/json' id='map-thumbs'>"
              + json.dumps(thumbs).replace("</", "<\\/") + "</script>", SCRIPT]
    return "\n".join(parts)
