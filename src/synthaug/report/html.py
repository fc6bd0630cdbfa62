"""Render the quality report as one self-contained HTML file (inline CSS and SVG)."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synthaug.records import content
from synthaug.report import charts
from synthaug.report.collect import ReportData, collect

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
.cards{display:flex;flex-wrap:wrap;gap:.8rem}
.card{background:#f4f6fa;border-radius:8px;padding:.7rem 1rem;min-width:120px}
.card b{display:block;font-size:1.5rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}
td,th{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f6fa} pre{white-space:pre-wrap;background:#fafafa;padding:.5rem}
.note{background:#fff6e0;border-left:4px solid #e0a800;padding:.5rem 1rem}
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _card(label: str, value: Any) -> str:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return f'<div class="card"><b id="{label.replace(" ", "-")}">{html.escape(text)}</b>' \
           f"{html.escape(label)}</div>"


def _cards(data: ReportData) -> str:
    m, drops = data.measures, data.drop_reasons()
    cards = [("records", m.get("records", 0)), ("dropped", sum(drops.values())),
             ("failures", len(data.failures)), ("rejects", len(data.rejects)),
             ("contamination hits", len(data.contamination()))]
    for key in ("distinct_2", "self_bleu", "vendi", "compression_ratio"):
        if key in m:
            cards.append((key.replace("_", "-"), m[key]))
    return '<div class="cards">' + "".join(_card(k, v) for k, v in cards) + "</div>"


def _steps(data: ReportData) -> str:
    if not data.manifest:
        return "<p>No manifest: this is a bare JSONL file.</p>"
    rows = [(label, s["in"], s["out"], json.dumps(s["dropped"]), s["failures"], s["rejects"],
             s["cache_hits"], s["seconds"], json.dumps(s.get("notes", {})))
            for label, s in data.manifest["steps"].items()]
    return _table(["step", "in", "out", "dropped by reason", "failures", "rejects",
                   "cache hits", "seconds", "notes"], rows)


def _diversity(data: ReportData) -> str:
    m = data.measures
    names = ("distinct_1", "distinct_2", "distinct_3", "self_bleu", "compression_ratio", "vendi")
    rows: list[tuple[str, str]] = [(k, f"{m[k]:.4f}") for k in names if k in m]
    for key in ("coverage", "gap"):
        for name, value in (m.get(key) or {}).items():
            rows.append((f"{key}.{name}", f"{value:.4f}"))
    parts = [_table(["measure", "value"], rows)]
    lengths = m.get("lengths")
    if lengths:
        hist = lengths["histogram"]
        parts.append(charts.histogram(hist["counts"], hist["edges"],
                                      f"length in words (mean {lengths['mean']:.1f})"))
    for name, dist in (m.get("scores") or {}).items():
        if dist:
            parts.append(charts.bars(list(dist), list(dist.values()), f"{name} distribution"))
    groups = m.get("groups")
    if groups and groups.get("counts"):
        top = list(groups["counts"].items())[:25]
        parts.append(charts.bars([k for k, _ in top], [v for _, v in top],
                                 f"records per group ({groups['groups']} groups, top 10% hold "
                                 f"{groups['top_10pct_share']:.0%})"))
    return "".join(parts)


def _share(label: str, found: dict[str, Any]) -> tuple[str, ...]:
    share = "n/a" if found.get("share") is None else f"{found['share']:.3f}"
    return (label, share, f"{found.get('expected', 0.5):.3f}", str(found.get("votes", 0)),
            str(found.get("p_value")), "FLAGGED" if found.get("flagged") else "ok")


def _judges(data: ReportData) -> str:
    found = data.measures.get("judges")
    if not found:
        return "<p>No judge verdicts in this dataset.</p>"
    pairs, ratings, ranks = found["pairwise"], found["ratings"], found["rankings"]
    rows = [_share("position: first position, of swapped pairs won by one position",
                   pairs["position"]),
            _share("length: longer wins (pairwise)", pairs["length"]),
            _share("self-preference: own model wins (pairwise)", pairs["self_preference"]),
            _share("position: first shown ranked top (k-wise)", ranks["first_shown_ranked_top"])]
    swap = pairs["swap_disagreement"]
    rho, own = ratings["length_correlation"], ratings["self_preference"]
    notes = (f"<p>judges: {html.escape(', '.join(found['judges']))}. Swapped pairs: "
             f"{swap['swapped_pairs']}, won by the same position in both orders: "
             f"{swap['share'] if swap['share'] is not None else 'n/a'}. Ratings: "
             f"{ratings['ratings']}; length/score rank correlation {rho['rho']}"
             f"{' (FLAGGED)' if rho['flagged'] else ''}; own-model rating minus others' "
             f"{own['gap']} ({own['own']} own, {own['other']} other)"
             f"{' (FLAGGED)' if own['flagged'] else ''}.</p>")
    return _table(["measure", "share", "expected", "votes", "p", "flag"], rows) + notes


def _agreement(data: ReportData) -> str:
    found = data.measures.get("agreement")
    if not found:
        return "<p>No records with both a model label and a human label.</p>"
    rows = [("model vs merged human label", *found["model_vs_human"].values())]
    rows += [(f"model vs {name}", *pair.values())
             for name, pair in found["model_vs_annotator"].items()]
    rows += [(name, *pair.values()) for name, pair in found["annotator_pairs"].items()]
    rows += [("Fleiss (people, items with 2+)", found["fleiss"]["kappa"],
              found["fleiss"]["items"], "")]
    matrix = found["confusion"]
    grid = [(f"model: {label}", *counts)
            for label, counts in zip(matrix["labels"], matrix["matrix"], strict=True)]
    return (_table(["raters", "kappa", "items", "agreement"], rows)
            + _table(["", *(f"human: {label}" for label in matrix["labels"])], grid))


def _sections(data: ReportData) -> list[tuple[str, str]]:
    drops = data.drop_reasons()
    clusters = data.clusters()
    hits = data.contamination()
    examples = "".join(f"<pre>{html.escape(json.dumps(content(r), ensure_ascii=False, indent=1))}"
                       "</pre>" for r in data.records[:5])
    return [
        ("Steps", _steps(data)),
        ("Drops by reason", charts.bars(list(drops), list(drops.values()), "dropped records")
         if drops else "<p>Nothing was dropped.</p>"),
        ("Duplicate clusters", _table(["kept record", "duplicates dropped", "a duplicate"],
                                      clusters) if clusters else "<p>No duplicate clusters.</p>"),
        ("Contamination", _table(["benchmark", "item", "method", "score", "record"],
                                 [(h["benchmark"], h["item"], h["method"], h["score"],
                                   h["excerpt"]) for h in hits])
         if hits else "<p>No contamination hits.</p>"),
        ("PII redacted", _table(["type", "redactions"], data.pii().most_common())
         if data.pii() else "<p>No PII redactions recorded.</p>"),
        ("Diversity, lengths, scores", _diversity(data)),
        ("Judges: position, length and self-preference bias", _judges(data)),
        ("Labels: model vs human agreement", _agreement(data)),
        ("Failures", _table(["step", "reason"], [(f.get("step"), f.get("reason"))
                                                 for f in data.failures[:20]])
         if data.failures else "<p>No failures.</p>"),
        ("Rejected input", _table(["file", "line", "field", "reason"],
                                  [(r.get("file"), r.get("line"), r.get("field"),
                                    r.get("reason")) for r in data.rejects[:20]])
         if data.rejects else "<p>No rejected input.</p>"),
        ("Example records", examples or "<p>No records.</p>"),
    ]


def render(data: ReportData) -> str:
    """The report page."""
    models = ", ".join(sorted(data.model_names())) or "unknown"
    note = ""
    if "135M" in models or "SmolLM2" in models:
        note = ('<p class="note">These records were made by SmolLM2-135M, the embedded demo '
                "model: they show the pipeline works, not what good data looks like.</p>")
    body = "".join(f"<h2>{html.escape(title)}</h2>{section}"
                   for title, section in _sections(data))
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>synthaug report: "
            f"{html.escape(data.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(data.title)}</h1><p>models: {html.escape(models)}; generated "
            f"{generated}</p>{note}{_cards(data)}{body}</body></html>")


def write_report(dataset: Path, out: Path | None = None, **options: Any) -> Path:
    """Collect, measure and write the report; returns its path."""
    data = collect(dataset, **options)
    target = out or (dataset / "report.html" if dataset.is_dir()
                     else dataset.with_suffix(".report.html"))
    target.write_text(render(data), encoding="utf-8")
    return target
