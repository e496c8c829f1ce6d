"""``BotModel.parse``, what `rasa-meta inbox` and `calibrate` read a bot's traffic with: the
same intents, confidences and fallbacks as the bot's own components, each text embedded once,
and the live classifier never patched."""

from __future__ import annotations

from typing import List

import numpy as np
import pytest
import torch
from rasa.nlu.classifiers.fallback_classifier import FallbackClassifier
from rasa.shared.nlu.training_data.message import Message

from rasa_meta.tooling.bot_model import FALLBACK_INTENT, BotModel
from tests.conftest import toy_corpus
from tests.rasa_helpers import load, make_config, new_storage, train

TEXTS = toy_corpus()[0][::3] + [
    "", "   ", "🙂🙂🙂",  # blank (no intent) and unreadable (withheld: confidence 0)
    "what is the capital of peru", "play some jazz music", "refund my order please",
]


@pytest.fixture(scope="module")
def bot(tiny_encoder_dir, tmp_path_factory) -> BotModel:
    storage = new_storage(tmp_path_factory.mktemp("bot-model-storage"))
    config = make_config(tiny_encoder_dir, epochs=0, head_steps=10, ranking_length=3)
    train(config, storage)
    classifier = load(config, storage)
    fallback_config = {**FallbackClassifier.get_default_config(), "threshold": 0.3,
                       "ambiguity_threshold": 0.05}
    return BotModel("test", classifier, FallbackClassifier(fallback_config), fallback_config)


def as_the_bot_parses(bot: BotModel, texts: List[str]):
    messages = bot.classifier.process([Message(data={"text": t}) for t in texts])
    own = [dict(m.get("intent")) for m in messages]
    bot.fallback.process(messages)
    return own, [m.get("intent")["name"] for m in messages]


def test_parse_reads_each_text_as_the_bots_components_do(bot):
    parsed = bot.parse(TEXTS, batch_size=4, progress=False)
    own, final = as_the_bot_parses(bot, TEXTS)
    assert parsed.top_intent == [o["name"] for o in own]
    assert np.allclose(parsed.confidence, [o["confidence"] for o in own], atol=1e-6)
    assert parsed.intent == final
    assert parsed.fell_back.tolist() == [name == FALLBACK_INTENT for name in final]
    assert parsed.top_intent[TEXTS.index("")] is None
    assert parsed.confidence[TEXTS.index("🙂🙂🙂")] == 0.0
    expected = bot.classifier.model.embed(TEXTS).numpy()
    assert np.allclose(parsed.embeddings, expected, atol=1e-5)


def test_parse_embeds_each_text_once_and_never_patches_the_model(bot, monkeypatch):
    model = bot.classifier.model
    written: List[str] = []
    embedded: List[int] = []

    class Watched(type(model)):
        def __setattr__(self, name, value):
            if name == "embed":
                written.append(name)
            super().__setattr__(name, value)

        def __delattr__(self, name):
            if name == "embed":
                written.append(name)
            super().__delattr__(name)

        def embed(self, texts):
            embedded.append(len(texts))
            return super().embed(texts)

    monkeypatch.setattr(model, "__class__", Watched)
    parsed = bot.parse(TEXTS, batch_size=4, progress=False)
    assert written == [], "parse replaced model.embed on the live classifier"
    assert sum(embedded) == len(TEXTS) and max(embedded) <= 4
    assert "embed" not in vars(model)
    assert len(parsed.intent) == len(TEXTS)
    with torch.inference_mode():  # the classifier itself is as it was
        assert bot.classifier.process([Message(data={"text": "hi"})])[0].get("intent")
