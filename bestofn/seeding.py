"""Seed derivation: stable per-item seeds from a run seed and a key.

A seed depends on the run seed and the item's own key (its id, or a response's text),
never on its position in a batch, so resumed and reordered runs sample the same values.
"""

from __future__ import annotations

import hashlib


def derive_seed(run_seed: int, *keys: object) -> int:
    """A 31-bit seed from the run seed and any keys (hash of their text forms)."""
    digest = hashlib.sha256(repr((run_seed, *keys)).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
