"""MinHash LSH band keys for a batch of texts, in this process or a worker process.

Kept free of heavy imports (no pydantic, no engine): worker processes load only this module,
the shingling helpers and rensa.
"""

from __future__ import annotations

from synthaug.errors import MissingDependency
from synthaug.steps.curate.textkey import shingles


def band_keys(texts: list[str], shingle_size: int, num_perm: int, seed: int,
              rows: int, bands: int) -> list[list[int]]:
    """LSH band keys (one per band) for each text."""
    try:
        from rensa import RMinHash
    except ImportError:
        raise MissingDependency("rensa", "minhash-dedup", "curate") from None
    sets = [shingles(text, shingle_size) or [""] for text in texts]
    signatures = RMinHash.digest_matrix_from_token_sets(sets, num_perm, seed).to_rows()
    # each band's values as a tuple, hashed; zip(*[iter(s)] * rows) cuts s into bands in C
    return [list(map(hash, zip(*[iter(sig)] * rows, strict=False)))[:bands]
            for sig in signatures]
