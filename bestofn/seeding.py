"""Seed derivation, the one place every seed is computed: stable per-item seeds from a run
seed and a key, spaced for vLLM's child seeds, and the child seed rule itself.

A seed depends on the run seed and the item's own key (its id, or a response's text),
never on its position in a batch, so resumed and reordered runs sample the same values.
"""

from __future__ import annotations

import hashlib

SEED_SPACING = 1 << 16
"""vLLM samples the n candidates of one request with seeds seed, seed+1, ..., seed+n-1, on a
server and in process alike; sampling seeds are multiples of this, so two instructions
never share a candidate's seed (n is at most 1024)."""


def derive_seed(run_seed: int, *keys: object) -> int:
    """A 31-bit seed from the run seed and any keys (hash of their text forms)."""
    digest = hashlib.sha256(repr((run_seed, *keys)).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def sampling_seed(run_seed: int, *keys: object) -> int:
    """The seed of one instruction's n candidates: derived like ``derive_seed``, spaced by
    ``SEED_SPACING`` (at most 47 bits, within every engine's 64-bit seed)."""
    return derive_seed(run_seed, *keys) * SEED_SPACING


def child_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th candidate of a request seeded ``seed``, as vLLM gives it
    (seed + index): a request from ``child_seed(seed, k)`` samples what candidates k, k+1,
    ... of a request from ``seed`` would (adaptive N's later rounds rely on it)."""
    return seed + index
