"""The shipped meta-trained encoder: present, offline, the component's default."""

from __future__ import annotations

import torch

from rasa_meta.runtime.encoder import (
    BASE_ENCODER,
    DELTA_FILE,
    SHIPPED_ENCODER_DIR,
    SentenceEncoder,
    read_metadata,
    resolve_encoder,
)
from rasa_meta.runtime.model import FewShotConfig
from rasa_meta.training.corpus import META_TRAINING_CORPORA


def test_default_is_the_shipped_meta_trained_encoder():
    assert FewShotConfig().encoder == "default"
    assert resolve_encoder("default") == str(SHIPPED_ENCODER_DIR)
    meta = read_metadata(SHIPPED_ENCODER_DIR)
    assert meta["format"] == "delta" and meta["base_model"] == BASE_ENCODER
    # provenance: what it was trained on (every meta-training corpus), how, with which seed
    assert set(META_TRAINING_CORPORA) <= set(meta["corpora"]) and not meta["excluded"]
    assert meta["objective"] and "seed" in meta and meta["command"]
    assert (SHIPPED_ENCODER_DIR / DELTA_FILE).stat().st_size < 16 * 2**20


def test_shipped_encoder_loads_offline_and_differs_from_its_base():
    shipped = SentenceEncoder.from_pretrained("default")
    base = SentenceEncoder.from_pretrained(BASE_ENCODER)
    texts = ["I lost my card", "what's the weather tomorrow"]
    a, b = shipped.encode(texts), base.encode(texts)
    assert a.shape == b.shape == (2, 384)
    assert torch.allclose(a.norm(dim=1), torch.ones(2), atol=1e-4)
    assert not torch.allclose(a, b, atol=1e-3)
    assert shipped.metadata["similarity_scale"] > 0


def test_shipped_files_name_no_path_of_the_build_machine():
    """What ships in the wheel must not leak (or depend on) the folder it was built in."""
    import re

    from rasa_meta.runtime.encoder import SHIPPED_ENCODER_DIR

    for path in SHIPPED_ENCODER_DIR.glob("*.json"):
        text = path.read_text(encoding="utf-8")
        absolute = re.findall(r'"(/(?:work|home|root|tmp|Users)/[^"]*)"', text)
        assert not absolute, f"{path.name}: {absolute}"
