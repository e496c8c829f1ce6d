"""Corpus embeddings kept on disk between runs, keyed by the encoder as it is now and the texts.

Training code (the in-scope scorer's episodes) encodes whole corpora; the tooling's
evaluations use the same cache (``rasa_meta.tooling.evaluation.cached_encode`` is this one).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Sequence

import torch

from rasa_meta.runtime.encoder import SentenceEncoder, encoder_fingerprint


def state_digest(module: torch.nn.Module) -> str:
    """Hash of a module's current in-memory tensors (every entry of its ``state_dict``): it
    changes when weights are changed in place, e.g. by an inner loop or a loaded delta, which
    the files on disk do not show. A tensor shared under two names is hashed once."""
    digest = hashlib.sha256()
    seen = set()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        shared = (tensor.data_ptr(), tensor.numel(), str(tensor.dtype))
        if shared in seen and tensor.numel() > 0:
            continue
        seen.add(shared)
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()


def cache_key(encoder: SentenceEncoder, texts: Sequence[str]) -> str:
    """What the embeddings of ``texts`` depend on: the encoder's files (tokenizer, config),
    its weights as they are in memory, its prompt and maximum length, and the texts."""
    parts = [encoder_fingerprint(encoder.name_or_path), state_digest(encoder),
             getattr(encoder, "prompt", "") or "", encoder.max_length, list(texts)]
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()[:24]


def cached_encode(
    encoder: SentenceEncoder, texts: Sequence[str], cache_dir: Optional[str] = None
) -> torch.Tensor:
    """Encode, reusing an on-disk copy keyed by :func:`cache_key` (plain encoding when
    ``cache_dir`` is None)."""
    if cache_dir is None:
        return encoder.encode(list(texts), batch_size=128, show_progress=len(texts) > 500)
    path = Path(cache_dir) / f"{cache_key(encoder, texts)}.pt"
    if path.is_file():
        return torch.load(path)
    emb = encoder.encode(list(texts), batch_size=128, show_progress=len(texts) > 500)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(emb, path)
    return emb
