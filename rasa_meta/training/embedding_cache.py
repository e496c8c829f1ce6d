"""Corpus embeddings kept on disk between runs, keyed by the encoder's weights and the texts.

Training code (the in-scope scorer's episodes) encodes whole corpora; the tooling's
evaluations use the same cache (``rasa_meta.tooling.evaluation.cached_encode``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional, Sequence

import torch

from rasa_meta.runtime.encoder import SentenceEncoder, encoder_fingerprint


def cached_encode(
    encoder: SentenceEncoder, texts: Sequence[str], cache_dir: Optional[str] = None
) -> torch.Tensor:
    """Encode, reusing an on-disk copy keyed by the encoder's weights and the texts (plain
    encoding when ``cache_dir`` is None)."""
    if cache_dir is None:
        return encoder.encode(list(texts), batch_size=128, show_progress=len(texts) > 500)
    key = hashlib.sha256(
        (encoder_fingerprint(encoder.name_or_path) + str(encoder.max_length) + "\n".join(texts))
        .encode("utf-8")
    ).hexdigest()[:24]
    path = Path(cache_dir) / f"{key}.pt"
    if path.is_file():
        return torch.load(path)
    emb = encoder.encode(list(texts), batch_size=128, show_progress=len(texts) > 500)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(emb, path)
    return emb
