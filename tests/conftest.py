"""Shared fixtures: a tiny random BERT encoder (fast, offline) and an isolated Rasa cache."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict, List

import pytest

# Rasa reads its cache location at import time: point it at a throw-away folder before any
# test imports Rasa, so tests never touch (or get restored from) the user's cache.
os.environ.setdefault("RASA_CACHE_DIRECTORY", tempfile.mkdtemp(prefix="rasa-meta-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent

# Small labelled data with clearly different intents, used across tests.
TOY_DATA: Dict[str, List[str]] = {
    "greet": ["hello there", "hi", "hey how are you", "good morning", "hello friend"],
    "goodbye": ["bye bye", "see you later", "goodbye", "talk to you soon", "farewell"],
    "order_status": [
        "where is my order",
        "track my package",
        "has my parcel shipped",
        "when will my order arrive",
        "order status please",
    ],
    "refund": [
        "i want my money back",
        "refund my purchase",
        "how do i get a refund",
        "return for a refund",
        "refund please",
    ],
}


def toy_corpus():
    texts = [t for ts in TOY_DATA.values() for t in ts]
    labels = [lab for lab, ts in TOY_DATA.items() for _ in ts]
    return texts, labels


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT with the bundled MiniLM tokenizer, saved to disk."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rasa_meta.runtime.encoder import bundled_base_dir

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(bundled_base_dir()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
