"""report.html: one self-contained page (thumbnails and the histogram embedded as base64), so it
opens from an archive or a mail with nothing beside it.

Still images are shown as themselves; clips (GIFs, videos, frame folders) by their first frame,
decoded with the extract stage's own clip reader. A file that is gone, lies outside the data
folder, is not a regular file (a FIFO, a device) or is too large shows a placeholder.
"""

from __future__ import annotations

import base64
import html
import io
import os
import stat
from pathlib import Path

import numpy as np

from pipeline.audit import review
from pipeline.extract.sources import thumbnail as read_thumbnail

THUMB = 120  # px, longest side


# The largest file a thumbnail is drawn from; bigger ones get a placeholder (a thumbnail never
# reads more than this of a file).
MAX_SOURCE_BYTES = 256 << 20


def source_path(data_root: str | None, row_id: str) -> Path | None:
    """The file a row came from (clip rows `path#clipN` map to their file), when it is one the
    report may read; else None (see `checked_source`)."""
    return checked_source(data_root, row_id)[0]


def checked_source(data_root: str | None, row_id: str) -> tuple[Path | None, str]:
    """(the row's file, "") when it is a regular file (or a folder of regular frame files) of
    at most MAX_SOURCE_BYTES under the data root; else (None, why not).

    An absolute id or one with `..` (a hostile store or manifest) could name any readable
    file on the machine, and a FIFO or device would block the reader: neither is opened. A
    symlink inside the data folder is followed (extract reads it the same way)."""
    if not data_root:
        return None, "file not found"
    root = os.path.abspath(data_root)
    path = os.path.normpath(os.path.join(root, row_id.split("#clip")[0]))
    if os.path.commonpath([root, path]) != root or path == root:
        return None, "outside the data folder"
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):  # a frame folder: every entry must be a plain file
            entries = [os.stat(entry.path) for entry in os.scandir(path)]
            if not all(stat.S_ISREG(e.st_mode) for e in entries):
                return None, "not a regular file"
            size = sum(e.st_size for e in entries)
        elif stat.S_ISREG(info.st_mode):
            size = info.st_size
        else:
            return None, "not a regular file"
    except OSError:
        return None, "file not found"
    if size > MAX_SOURCE_BYTES:
        return None, "too large"
    return Path(path), ""


def _jpeg_data_uri(img) -> str:
    buffer = io.BytesIO()
    img.convert("RGB").save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _placeholder(text: str):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (THUMB, THUMB), (225, 225, 225))
    ImageDraw.Draw(img).text((8, THUMB // 2 - 6), text, fill=(90, 90, 90))
    return img


def thumbnail(data_root: str | None, row_id: str) -> str:
    """A data URI of the row's thumbnail, or of a placeholder when the file cannot be read."""
    path, why_not = checked_source(data_root, row_id)
    if path is None:
        return _jpeg_data_uri(_placeholder(why_not))
    try:  # the reader that claims the file draws it (a clip: its first frame)
        return _jpeg_data_uri(read_thumbnail(path, THUMB))
    except Exception:  # noqa: BLE001 -- a broken file must not cost the whole page
        return _jpeg_data_uri(_placeholder("unreadable"))


def histogram_png(nearest: np.ndarray, threshold: float) -> str:
    """The distribution of each row's nearest-neighbour distance, with the threshold drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.6), dpi=90)
    if len(nearest):
        top = max(1.0, float(np.max(nearest)))  # a fixed range: identical distances still plot
        ax.hist(nearest, bins=60, range=(0.0, top), color="#4c72b0")
    ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel("cosine distance to the nearest other row (mean-centred vectors)")
    ax.set_ylabel("rows")
    ax.legend(loc="upper right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


STYLE = """
body{font-family:system-ui,sans-serif;margin:24px 32px;color:#222;max-width:none}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:28px}
.meta{color:#666;font-size:13px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:24px} .card.bad b{color:#c44e52}
table{border-collapse:collapse;font-size:13px} td,th{border-bottom:1px solid #eee;padding:6px;
text-align:left;vertical-align:middle} img.t{width:120px;height:auto;border-radius:3px}
.more{color:#666;font-size:13px}
.caveat{border-left:4px solid #dd8452;background:#fdf3ea;padding:8px 12px;margin:8px 0;
font-size:14px} .caveat.bad{border-color:#c44e52;background:#fbeaea}
.source{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:10px 0}
.strip{display:flex;flex-wrap:wrap;gap:6px;margin:6px 0} .strip figure{margin:0;font-size:11px;
color:#555;width:120px;overflow-wrap:anywhere} table.wide{width:100%}
"""


def _esc(value) -> str:
    return html.escape(str(value))


def _cards(counts: dict) -> str:
    shown = [("cross-split pairs", counts["cross_split_pairs"], True),
             ("cross-group pairs", counts["cross_group_pairs"], True),
             ("duplicate pairs", counts["duplicate_pairs"], False),
             ("exact duplicates", counts["exact_pairs"], False),
             ("label issues", counts["label_issues"], True),
             ("outliers", counts["outliers"], False)]
    return "".join(f'<div class="card{" bad" if bad and n else ""}"><b>{n}</b>{_esc(name)}</div>'
                   for name, n, bad in shown)


def caveats(summary: dict) -> str:
    """The warnings a reader of the page needs before trusting it (not only on the console):
    random-weight vectors, the audit's own warnings (many identical vectors, pairs not listed
    or not counted), how the threshold was chosen, how credible the label issues are."""
    th = summary["thresholds"]
    boxes = []
    if (summary.get("provenance") or {}).get("weights") == "none":
        boxes.append(("bad", "These vectors come from a backbone with RANDOM weights (--weights "
                      "none): distances say little about what the images show, so pairs, "
                      "groups and label issues here are not evidence. Audit a store extracted "
                      "with pretrained weights."))
    boxes += [("bad", line.removeprefix("warning: ")) for line in summary.get("warnings", [])]
    text = f"Near-duplicate threshold {th['duplicate_distance']:g}: {th['duplicate_how']}."
    if not th.get("duplicate_adaptive"):
        text += (" A fixed threshold fits one kind of duplicate: frames, crops or edits of one "
                 "photo can sit farther apart than it. Check the distance histogram below, or "
                 "pass --threshold.")
    boxes.append(("", text))
    if summary.get("label_issues_from"):
        boxes.append(("", f"Label issues: {summary['label_issues_from']}."))
    return "".join(f"<div class='caveat {kind}'>{_esc(text)}</div>" for kind, text in boxes)


def leaks_by_source(leaks: list, group_of: dict, thumb, shown: int, attrs=lambda r: "") -> str:
    """Leaking pairs grouped by source (the audit's suggested group of their rows): each
    source once, with its rows' thumbnails and splits, its pairs listed under it (each pair's
    row carrying `attrs(pair)`, its review controls)."""
    by_group: dict[str, list] = {}
    for r in leaks:
        by_group.setdefault(group_of.get(r["id_a"]) or r["id_a"], []).append(r)
    parts = []
    for k, (name, pairs) in enumerate(sorted(by_group.items(), key=lambda kv: -len(kv[1]))):
        if k == shown:
            parts.append(f'<p class="more">{len(by_group) - shown} more source(s) in '
                         "duplicates.csv and suggested_groups.csv</p>")
            break
        rows = {}
        for r in pairs:
            rows.setdefault(r["id_a"], r["split_a"])
            rows.setdefault(r["id_b"], r["split_b"])
        splits = sorted(set(rows.values()), key=lambda x: ("train", "val", "test").index(x)
                        if x in ("train", "val", "test") else 3)
        figures = "".join(f"<figure>{thumb(i)}<figcaption>{_esc(split)}: {_esc(i)}</figcaption>"
                          "</figure>" for i, split in list(rows.items())[:12])
        listed = "".join(f"<tr{attrs(r)}><td>{_esc(r['id_a'])}</td><td>{_esc(r['id_b'])}</td>"
                         f"<td>{_esc(r['split_a'])} / {_esc(r['split_b'])}</td>"
                         f"<td>{r['distance']:.4f}</td><td>{r['kind']}</td></tr>"
                         for r in pairs[:shown])
        parts.append(f"<div class='source'><b>{_esc(name)}</b>: {len(rows)} rows across "
                     f"{_esc(', '.join(splits))}, {len(pairs)} leaking pair(s)"
                     f"<div class='strip'>{figures}</div><details><summary>pairs</summary>"
                     "<table class='wide'><tr><th>a</th><th>b</th><th>splits</th>"
                     f"<th>distance</th><th>kind</th></tr>{listed}</table></details></div>")
    return "".join(parts)


def _more(total: int, shown: int, csv_name: str) -> str:
    return f'<p class="more">{total - shown} more in {csv_name}</p>' if total > shown else ""


def write_report(path: Path, summary: dict, dupes: list, issues: list, outliers: list,
                 nearest: np.ndarray, data_root: str | None, shown: int,
                 group_of: dict | None = None, extra_html: str = "",
                 identity: str = "", class_of: dict | None = None) -> None:
    """Writes report.html.

    Args:
        path: the file to write.
        summary: summary.json's content.
        dupes: duplicate rows (dicts, leaks first), as in duplicates.csv.
        issues: label-issue rows [id, split, given, suggested, score].
        outliers: (id, split, score) rows, highest score first.
        nearest: every row's nearest-neighbour distance (for the histogram).
        data_root: folder the ids are relative to (thumbnails), or None.
        shown: most rows per table.
        group_of: each row id's suggested group (suggested_groups.csv), which groups the
            leaking pairs by source; without it each pair stands alone.
        extra_html: sections added at the end (the split coverage and the map).
        identity: the audit's identity (`decisions.audit_identity`): with it, every listed
            finding gets review controls and the page saves decisions.csv (review.py).
        class_of: each listed row id's class name (the review's class filter).
    """
    class_of = class_of or {}

    def pair_attrs(r):
        return review.finding_attrs("pair", (r["id_a"], r["id_b"]), (r["split_a"], r["split_b"]),
                                    (class_of.get(r["id_a"], ""), class_of.get(r["id_b"], "")))

    thumbs: dict[str, str] = {}

    def thumb(row_id):
        if row_id not in thumbs:
            thumbs[row_id] = thumbnail(data_root, row_id)
        return f'<img class="t" src="{thumbs[row_id]}" alt="{_esc(row_id)}">'

    th = summary["thresholds"]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>audit: "
             f"{_esc(Path(summary['store']).name)}</title><style>{STYLE}{review.STYLE}</style>"
             "</head><body>",
             f"<h1>Dataset audit</h1><p class='meta'>{_esc(summary['store'])}<br>"
             f"{summary['n_rows']} rows; splits: {_esc(summary['splits']['how'])}; "
             f"{_esc(summary['created_at'])}</p>", f"<div class='cards'>{_cards(summary['counts'])}"
             "</div>", caveats(summary)]
    if identity:
        parts.append(review.review_bar(identity, Path(summary["store"]).name,
                                       summary.get("class_balance", {}).keys()))
    leaks = [r for r in dupes if r["cross_split"] or r["cross_group"]]
    parts.append(f"<h2>Leaking pairs ({len(leaks)})</h2><p class='meta'>near-duplicates on "
                 f"both sides of a split or in different groups (distance &le; "
                 f"{th['duplicate_distance']:g}); test scores are optimistic while they stay</p>")
    if leaks and group_of:
        parts.append(leaks_by_source(leaks, group_of, thumb, shown, pair_attrs))
    elif leaks:
        parts.append("<table><tr><th>a</th><th>b</th><th>ids</th><th>splits</th><th>distance"
                     "</th><th>kind</th></tr>")
        for r in leaks[:shown]:
            parts.append(f"<tr{pair_attrs(r)}><td>{thumb(r['id_a'])}</td>"
                         f"<td>{thumb(r['id_b'])}</td>"
                         f"<td>{_esc(r['id_a'])}<br>{_esc(r['id_b'])}</td><td>{_esc(r['split_a'])}"
                         f" / {_esc(r['split_b'])}</td><td>{r['distance']:.4f}</td>"
                         f"<td>{r['kind']}</td></tr>")
        parts.append("</table>" + _more(len(leaks), shown, "duplicates.csv"))
    parts.append(f"<h2>Suspected label issues ({len(issues)})</h2>")
    credibility = summary.get("label_issue_credibility") or {}
    if credibility.get("flagged_by_cleanlab", 0) > len(issues):
        parts.append(f"<p class='meta'>{credibility['flagged_by_cleanlab'] - len(issues)} more "
                     "rows flagged by cleanlab where the probe is not credible are listed in "
                     "label_candidates.csv</p>")
    if issues:
        parts.append("<table><tr><th></th><th>id</th><th>split</th><th>given</th><th>suggested"
                     "</th><th>label quality</th></tr>")
        for row_id, split, given, suggested, score in issues[:shown]:
            attrs = review.finding_attrs("label", [row_id], [split], [given], suggested)
            parts.append(f"<tr{attrs}><td>{thumb(row_id)}</td><td>{_esc(row_id)}</td>"
                         f"<td>{_esc(split)}</td><td>{_esc(given)}</td><td><b>{_esc(suggested)}</b></td>"
                         f"<td>{score:.3f}</td></tr>")
        parts.append("</table>" + _more(len(issues), shown, "label_issues.csv"))
    parts.append(f"<h2>Outliers ({len(outliers)})</h2><p class='meta'>{_esc(th['outlier_score'])}"
                 f" above {th['outlier_cutoff']:.4f} ({_esc(th['outlier_how'])})</p>")
    if outliers:
        parts.append("<table><tr><th></th><th>id</th><th>split</th><th>score</th></tr>")
        for row_id, split, score in outliers[:shown]:
            attrs = review.finding_attrs("outlier", [row_id], [split],
                                         [class_of.get(row_id, "")])
            parts.append(f"<tr{attrs}><td>{thumb(row_id)}</td><td>{_esc(row_id)}</td>"
                         f"<td>{_esc(split)}</td><td>{score:.4f}</td></tr>")
        parts.append("</table>" + _more(len(outliers), shown, "outliers.csv"))
    parts.append(f"<h2>Distance distribution</h2><p class='meta'>{_esc(th['duplicate_how'])}</p>"
                 f"<img src='{histogram_png(nearest, th['duplicate_distance'])}' "
                 "alt='nearest-neighbour distance histogram'>")
    parts.append(extra_html)
    parts.append((review.SCRIPT if identity else "") + "</body></html>")
    Path(path).write_text("\n".join(parts), encoding="utf-8")
