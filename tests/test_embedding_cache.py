"""The on-disk embedding cache (``cached_encode``) of the evaluations and the in-scope
scorer's training: a cached copy is used only for the encoder exactly as it is now."""

from __future__ import annotations

import torch

from rasa_meta.runtime.encoder import SentenceEncoder
from rasa_meta.tooling import evaluation
from rasa_meta.training import embedding_cache
from rasa_meta.training.embedding_cache import cached_encode, state_digest

TEXTS = ["where is my order", "refund please", "hello there"]


def test_the_tools_and_training_share_one_cache():
    assert evaluation.cached_encode is embedding_cache.cached_encode


def test_a_cached_copy_is_reused_for_the_same_encoder(tiny_encoder_dir, tmp_path):
    encoder = SentenceEncoder.from_pretrained(str(tiny_encoder_dir))
    first = cached_encode(encoder, TEXTS, str(tmp_path))
    assert len(list(tmp_path.glob("*.pt"))) == 1
    again = SentenceEncoder.from_pretrained(str(tiny_encoder_dir))  # a fresh load: same key
    assert torch.equal(cached_encode(again, TEXTS, str(tmp_path)), first)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    assert torch.allclose(first, encoder.encode(TEXTS), atol=1e-6)


def test_another_prompt_is_not_served_the_embeddings_without_it(tiny_encoder_dir, tmp_path):
    encoder = SentenceEncoder.from_pretrained(str(tiny_encoder_dir))
    plain = cached_encode(encoder, TEXTS, str(tmp_path))
    encoder.prompt = "query: "
    prompted = cached_encode(encoder, TEXTS, str(tmp_path))
    assert torch.allclose(prompted, encoder.encode(TEXTS), atol=1e-6)
    assert not torch.allclose(prompted, plain, atol=1e-4)


def test_weights_changed_in_memory_are_not_served_stale_embeddings(tiny_encoder_dir, tmp_path):
    """The inner loop at `rasa train` (and a loaded delta) change the weights in place; the
    files on disk, and so the encoder's fingerprint, stay the same."""
    encoder = SentenceEncoder.from_pretrained(str(tiny_encoder_dir))
    before = cached_encode(encoder, TEXTS, str(tmp_path))
    digest = state_digest(encoder)
    with torch.no_grad():
        for p in encoder.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert state_digest(encoder) != digest
    after = cached_encode(encoder, TEXTS, str(tmp_path))
    assert torch.allclose(after, encoder.encode(TEXTS), atol=1e-6)
    assert not torch.allclose(after, before, atol=1e-4)
    assert len(list(tmp_path.glob("*.pt"))) == 2
