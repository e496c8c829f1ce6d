"""End to end: `rasa train` on example_bot, then the trained model on held-out paraphrases."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rasa_meta.training.corpus import load_rasa_nlu
from tests.conftest import REPO

BOT = REPO / "example_bot"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_bot(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("bot")
    for name in ("config.yml", "domain.yml", "data", "endpoints.yml", "credentials.yml"):
        src = BOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    rasa = Path(sys.executable).parent / "rasa"
    env = {**os.environ, "RASA_TELEMETRY_ENABLED": "false"}
    done = subprocess.run(
        [str(rasa), "train", "--fixed-model-name", "bot", "--out", "models"],
        cwd=work, env=env, capture_output=True, text=True, timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return work / "models" / "bot.tar.gz"


@pytest.fixture(scope="module")
def agent(trained_bot):
    from rasa.core.agent import Agent

    return Agent.load(str(trained_bot))


def parse(agent, text):
    return asyncio.run(agent.parse_message(text))


def test_the_trained_nlu_uses_the_plugin(agent):
    result = parse(agent, "where is my parcel")
    assert "intent_ranking" in result and result["intent_ranking"]
    components = [
        node.uses.__name__ for node in agent.processor.graph_runner._graph_schema.nodes.values()
    ]
    assert "MetaIntentClassifier" in components
    assert "DIETClassifier" not in components


def test_most_held_out_paraphrases_are_understood(agent):
    held_out = load_rasa_nlu(BOT / "tests" / "nlu_paraphrases.yml")
    predicted = [parse(agent, text)["intent"]["name"] for text in held_out.texts]
    correct = sum(p == g for p, g in zip(predicted, held_out.labels))
    assert correct / len(held_out) >= 0.8, list(zip(held_out.texts, predicted))


def test_off_topic_messages_reach_the_fallback(agent):
    messages = (BOT / "tests" / "oos_messages.txt").read_text().splitlines()
    names = [parse(agent, m)["intent"]["name"] for m in messages if m.strip()]
    assert names.count("nlu_fallback") / len(names) >= 0.7, list(zip(messages, names))


def test_a_conversation_gets_the_fallback_reply_for_gibberish(agent):
    replies = asyncio.run(agent.handle_text("asdf qwerty zzz", sender_id="t1"))
    texts = " ".join(r.get("text", "") for r in replies)
    assert "rephrase" in texts.lower()


def test_cancel_flow_confirms_after_other_topics(agent):
    sender = "t2"
    for text in ("hi", "where is my order", "please cancel my order"):
        asyncio.run(agent.handle_text(text, sender_id=sender))
    replies = asyncio.run(agent.handle_text("yes", sender_id=sender))
    assert "cancellation" in " ".join(r.get("text", "") for r in replies).lower()


def test_faq_and_chitchat_are_answered_by_their_response_keys(agent):
    domain = yaml.safe_load((BOT / "domain.yml").read_text())["responses"]
    for text, key in [("any student discounts?", "faq/student_discount"),
                      ("is your cotton organic", "faq/sustainability"),
                      ("what can I call you", "chitchat/ask_name")]:
        parsed = parse(agent, text)
        assert parsed["intent"]["name"] == key.split("/")[0], (text, parsed["intent"])
        assert parsed["response_selector"]["default"]["response"]["intent_response_key"] == key
        replies = asyncio.run(agent.handle_text(text, sender_id=f"faq-{key}"))
        assert replies[0]["text"] == domain[f"utter_{key}"][0]["text"], (text, replies)
