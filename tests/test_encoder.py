"""Encoding: pooling, normalisation, batching, truncation, resolution, delta checkpoints."""

from __future__ import annotations

import pytest
import torch

from rasa_meta.runtime.encoder import (
    EncoderNotFoundError,
    SentenceEncoder,
    bundled_base_dir,
    encoder_fingerprint,
    mean_pool,
    read_metadata,
    resolve_encoder,
    save_checkpoint,
    set_trainable_layers,
)


@pytest.fixture(scope="module")
def tiny(tiny_encoder_dir) -> SentenceEncoder:
    return SentenceEncoder.from_pretrained(str(tiny_encoder_dir), max_length=16)


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(mean_pool(hidden, mask), torch.tensor([[2.0, 2.0]]))


def test_embeddings_are_unit_length_and_batch_independent(tiny):
    texts = ["hello", "where is my order please tell me now", "refund"]
    together = tiny.encode(texts, batch_size=3)
    alone = torch.cat([tiny.encode([t]) for t in texts])
    assert together.shape == (3, 32)
    assert torch.allclose(together.norm(dim=1), torch.ones(3), atol=1e-5)
    # padding in a mixed-length batch must not change any embedding
    assert torch.allclose(together, alone, atol=1e-5)


def test_encode_keeps_input_order_across_batches(tiny):
    texts = [f"message number {i} " + "word " * (i % 5) for i in range(11)]
    batched = tiny.encode(texts, batch_size=4)
    for i in (0, 5, 10):
        assert torch.allclose(batched[i], tiny.encode([texts[i]])[0], atol=1e-5)


def test_long_text_is_truncated_not_an_error(tiny):
    long_text = "order " * 5000
    emb = tiny.encode([long_text])
    assert emb.shape == (1, 32) and torch.isfinite(emb).all()
    assert tiny.tokenize([long_text])["input_ids"].shape[1] == 16


def test_empty_input_gives_empty_matrix(tiny):
    assert tiny.encode([]).shape == (0, 32)


def test_resolution_of_names_and_paths(tmp_path):
    assert resolve_encoder("sentence-transformers/all-MiniLM-L6-v2") == str(bundled_base_dir())
    assert resolve_encoder(str(tmp_path)) == str(tmp_path.resolve())
    assert resolve_encoder("some-org/some-model") == "some-org/some-model"  # a hub name
    with pytest.raises(EncoderNotFoundError, match="does not exist"):
        resolve_encoder("./no/such/encoder")


def test_missing_model_dir_raises_encoder_error(tmp_path):
    with pytest.raises(EncoderNotFoundError):
        SentenceEncoder.from_pretrained(str(tmp_path))  # exists but holds no model


def test_delta_checkpoint_round_trip(tiny_encoder_dir, tmp_path):
    enc = SentenceEncoder.from_pretrained(str(tiny_encoder_dir))
    names = set_trainable_layers(enc.model, 1)
    assert names and all(".layer.1." in n for n in names)
    with torch.no_grad():
        for n, p in enc.model.named_parameters():
            if n in names:
                p.add_(0.5)
    out = save_checkpoint(enc, tmp_path / "delta", {"base_model": str(tiny_encoder_dir)}, names)
    assert read_metadata(out)["format"] == "delta"
    reloaded = SentenceEncoder.from_pretrained(str(out))
    base = SentenceEncoder.from_pretrained(str(tiny_encoder_dir))
    texts = ["track my package", "hello"]
    assert torch.allclose(reloaded.encode(texts), enc.encode(texts), atol=1e-2)
    assert not torch.allclose(reloaded.encode(texts), base.encode(texts), atol=1e-3)


def test_full_checkpoint_round_trip_and_fingerprint_changes(tiny_encoder_dir, tmp_path):
    enc = SentenceEncoder.from_pretrained(str(tiny_encoder_dir))
    a = save_checkpoint(enc, tmp_path / "a", {"note": "a"})
    with torch.no_grad():
        next(enc.model.parameters()).add_(1.0)
    b = save_checkpoint(enc, tmp_path / "b", {"note": "a"})
    assert read_metadata(a)["format"] == "full"
    assert encoder_fingerprint(str(a)) != encoder_fingerprint(str(b))
    assert encoder_fingerprint(str(a)) == encoder_fingerprint(str(a))


def test_interrupted_encode_restores_training_mode(tiny_encoder_dir, monkeypatch):
    encoder = SentenceEncoder.from_pretrained(str(tiny_encoder_dir))
    encoder.model.train()

    def failing(texts):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(encoder, "forward", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        encoder.encode(["hello"])
    assert encoder.model.training
