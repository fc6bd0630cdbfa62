"""What a report shows, gathered from a run folder (or a bare JSONL file)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthaug.io import load_jsonl, records_file
from synthaug.measure.agreement import label_agreement
from synthaug.measure.dataset import measure
from synthaug.measure.judge_bias import judge_biases
from synthaug.records import Record, meta


@dataclass
class ReportData:
    """Everything the page needs."""

    title: str
    manifest: dict[str, Any] | None
    records: list[Record]
    dropped: list[Record] = field(default_factory=list)
    failures: list[Record] = field(default_factory=list)
    rejects: list[Record] = field(default_factory=list)
    measures: dict[str, Any] = field(default_factory=dict)

    def drop_reasons(self) -> Counter[str]:
        """Drops per reason, from the manifest when there is one, else from dropped.jsonl."""
        counts: Counter[str] = Counter()
        if self.manifest:
            for stats in self.manifest.get("steps", {}).values():
                counts.update(stats.get("dropped", {}))
            return counts
        counts.update(str(d.get("reason")) for d in self.dropped)
        return counts

    def clusters(self) -> list[tuple[str, int, str]]:
        """(kept id, duplicates dropped, excerpt of a duplicate), largest first."""
        sizes: Counter[str] = Counter()
        example: dict[str, str] = {}
        for row in self.dropped:
            cluster = meta(row.get("record", {})).get("cluster")
            if cluster:
                sizes[str(cluster)] += 1
                example.setdefault(str(cluster), _excerpt(row.get("record", {})))
        return [(c, n, example[c]) for c, n in sizes.most_common(20)]

    def contamination(self) -> list[dict[str, Any]]:
        """Every contamination hit (dropped or flagged) with an excerpt."""
        hits = []
        for row in self.dropped:
            finding = meta(row.get("record", {})).get("contamination")
            if finding:
                hits.append({**finding, "excerpt": _excerpt(row["record"])})
        for record in self.records:
            finding = meta(record).get("contamination")
            if finding:
                hits.append({**finding, "excerpt": _excerpt(record)})
        return hits

    def pii(self) -> Counter[str]:
        """PII redactions by type, summed over the records."""
        counts: Counter[str] = Counter()
        for record in self.records:
            counts.update(meta(record).get("pii") or {})
        return counts

    def model_names(self) -> set[str]:
        """Models that made the records."""
        return {str(meta(r)["model"]) for r in self.records[:500] if meta(r).get("model")}


def _excerpt(record: Record, length: int = 160) -> str:
    text = " | ".join(str(v) for k, v in record.items() if k != "_meta" and isinstance(v, str))
    return text[:length] + ("…" if len(text) > length else "")


def collect(dataset: Path, *, reference: Path | None = None, fields: list[str] | None = None,
            group_by: str | None = None, embedder: str | None = "static") -> ReportData:
    """Read a run folder or a JSONL file and compute its measures."""
    folder = dataset if dataset.is_dir() else dataset.parent
    records_path = records_file(dataset)
    manifest_path = folder / "manifest.json"
    manifest = None
    if dataset.is_dir() and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))

    def side(name: str) -> list[Record]:
        path = folder / f"{name}.jsonl"
        return load_jsonl(path) if dataset.is_dir() and path.exists() else []

    data = ReportData(title=str(manifest["recipe"]) if manifest else records_path.stem,
                      manifest=manifest, records=load_jsonl(records_path),
                      dropped=side("dropped"), failures=side("failures"),
                      rejects=side("rejects"))
    ref = load_jsonl(reference) if reference else None
    data.measures = measure(data.records, fields=fields, reference=ref, group_by=group_by,
                            embedder=embedder) if data.records else {"records": 0}
    biases = judge_biases([*data.records, *data.dropped])
    if biases:
        data.measures["judges"] = biases
    agreement = label_agreement(data.records)
    if agreement:
        data.measures["agreement"] = agreement
    return data
