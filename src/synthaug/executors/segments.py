"""A pipeline cut into segments for a sharding executor.

A *shard* segment runs on every shard apart: optionally settling a `FirstOfKeys` step first
(with the decisions the driver made from every shard's keys), then consecutive per-record
steps, then optionally writing the keys of the next `FirstOfKeys` step. A *gather* segment
runs consecutive global steps once, on the driver, over every shard's records in order.

    [record, record, minhash, record, rounds, record]
    -> shard(steps 0-1, keys of 2) | shard(settle 2, step 3) | gather(step 4) | shard(step 5)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from synthaug.pipeline import Pipeline
from synthaug.records import stable_hash
from synthaug.steps.base import AnyStep
from synthaug.steps.sharded import FirstOfKeys


@dataclass
class Segment:
    """Steps (by position in the pipeline) that run together, sharded or gathered."""

    index: int
    kind: str  # "shard" or "gather"
    steps: list[int] = field(default_factory=list)
    settle: int | None = None  # a FirstOfKeys step settled before `steps` (shard)
    keys: int | None = None  # a FirstOfKeys step whose keys are written after `steps` (shard)

    @property
    def name(self) -> str:
        """The segment's folder under OUT/shards."""
        return f"s{self.index:02d}-{self.kind}"

    def signature(self) -> str:
        """What the segment runs (the recipe itself is in the run identity)."""
        return stable_hash([self.kind, self.steps, self.settle, self.keys])

    def counted(self) -> list[int]:
        """The steps whose counters this segment's parts carry, in order."""
        return ([self.settle] if self.settle is not None else []) + self.steps

    def empty(self) -> bool:
        """Whether the segment would do nothing."""
        return not self.steps and self.settle is None and self.keys is None


def combined(step: AnyStep) -> bool:
    """Whether a global step combines across shards by keys (see `steps/sharded.py`)."""
    return isinstance(step, FirstOfKeys)


def plan_segments(pipeline: Pipeline) -> list[Segment]:
    """The pipeline's segments, in order."""
    segments: list[Segment] = []
    current = Segment(0, "shard")

    def close(next_kind: str, settle: int | None = None) -> None:
        nonlocal current
        if not current.empty():
            segments.append(current)
        current = Segment(len(segments), next_kind, settle=settle)

    for index, (_, step) in enumerate(pipeline.steps):
        if step.scope() == "record":
            if current.kind == "gather":
                close("shard")
            current.steps.append(index)
        elif combined(step):
            if current.kind == "gather":
                close("shard")
            current.keys = index
            close("shard", settle=index)
        else:
            if current.kind == "shard":
                close("gather")
            current.steps.append(index)
    close("shard")
    if not segments:  # no step: the input is the output, as locally
        segments.append(Segment(0, "shard"))
    for position, segment in enumerate(segments):
        segment.index = position
    return segments
