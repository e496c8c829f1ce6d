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


@pytest.fixture(scope="session")
def torch_threads_at_start() -> int:
    import torch

    return torch.get_num_threads()


@pytest.fixture(autouse=True)
def restore_torch_threads(torch_threads_at_start):
    """Loading a model for serving lowers torch's (process-wide) intra-op threads: every test
    ends with the count the session started with, so no test's speed or numerics depend on
    which tests ran before it."""
    import sys

    import torch

    yield
    if torch.get_num_threads() != torch_threads_at_start:
        torch.set_num_threads(torch_threads_at_start)
    component = sys.modules.get("rasa_meta.component")
    if component is not None:  # forget the count a serving load recorded
        component._threads_before_serving = None


def pytest_addoption(parser):
    parser.addoption("--run-install", action="store_true",
                     help="also run the `install` tests (build the wheel, fresh environment)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-install"):
        return
    skip = pytest.mark.skip(reason="installs into a fresh environment: make test-install")
    for item in items:
        if "install" in item.keywords:
            item.add_marker(skip)
