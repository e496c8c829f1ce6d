"""The README's recipes are files under docs/recipes/, and each one trains a bot with
`rasa train` and answers as the README says. Every full config.yml the README shows is one of
these files, and every option snippet it shows is a valid MetaIntentClassifier config."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from rasa_meta.component import MetaIntentClassifier
from tests.conftest import REPO

RECIPES = REPO / "docs" / "recipes"
BOT = REPO / "tests" / "data" / "recipe_bot"
README = REPO / "README.md"


def readme_yaml_blocks() -> List[str]:
    return re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def recipe_files() -> Dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in sorted(RECIPES.glob("*/*.yml"))}


def test_every_full_config_in_the_readme_is_a_recipe_file():
    files = recipe_files()
    full = [b for b in readme_yaml_blocks() if b.startswith(("recipe:", "version:"))]
    assert len(full) >= 4, "the README shows its recipes' files"
    for block in full:
        assert block in files.values(), f"README block is not a file in docs/recipes:\n{block}"
    shown = {p for p, text in files.items() if text in full}
    assert shown == set(files), f"recipes the README does not show: {set(files) - shown}"


def test_every_option_snippet_in_the_readme_is_a_valid_config():
    from rasa.shared.utils.io import read_yaml  # how `rasa train` reads config.yml (1e-4 a float)

    snippets = [read_yaml(b) for b in readme_yaml_blocks() if "rasa_meta." in b]
    checked = 0
    for snippet in snippets:
        for item in (snippet or {}).get("pipeline", []):
            if item.get("name") == "rasa_meta.MetaIntentClassifier":
                config = {**MetaIntentClassifier.get_default_config(),
                          **{k: v for k, v in item.items() if k != "name"}}
                MetaIntentClassifier.validate_config(config, check_encoder=False)
                checked += 1
    assert checked >= 5


def test_policies_in_every_recipe_bound_the_history():
    for path, text in recipe_files().items():
        if path.name == "config.yml":
            ted = [p for p in yaml.safe_load(text)["policies"] if p["name"] == "TEDPolicy"]
            assert ted and all("max_history" in p for p in ted), path


def add_recipe_files(project: Path, recipe: str) -> None:
    """A recipe's domain.yml joins the domain, its other files (rules, NLU data) the data."""
    for path in sorted((RECIPES / recipe).glob("*.yml")):
        if path.name == "domain.yml":
            shutil.copy(path, project / "domain" / f"{recipe}.yml")
        elif path.name != "config.yml":
            shutil.copy(path, project / "data" / f"{recipe}_{path.name}")


def make_project(tmp: Path, recipe: str) -> Path:
    """The test bot with a recipe's config.yml and files, plus the fallback recipe's rule and
    response where the config has a FallbackClassifier."""
    shutil.copytree(BOT, tmp, dirs_exist_ok=True)
    config = RECIPES / recipe / "config.yml"
    shutil.copy(config, tmp / "config.yml")
    add_recipe_files(tmp, recipe)
    if "FallbackClassifier" in config.read_text() and recipe != "fallback":
        add_recipe_files(tmp, "fallback")
    return tmp


def train_project(project: Path) -> str:
    from rasa.model_training import train

    result = train(domain=str(project / "domain"), config=str(project / "config.yml"),
                   training_files=[str(project / "data")], output=str(project / "models"),
                   fixed_model_name="bot")
    assert result.code == 0 and result.model
    return result.model


@pytest.fixture(scope="module", params=sorted(p.name for p in RECIPES.iterdir() if p.is_dir()))
def agent(request, tmp_path_factory):
    from rasa.core.agent import Agent

    project = make_project(tmp_path_factory.mktemp(request.param), request.param)
    return request.param, Agent.load(train_project(project))


def replies(agent, text: str) -> List[str]:
    sent = asyncio.run(agent.handle_text(text, sender_id=f"test-{abs(hash(text))}"))
    return [m.get("text") for m in sent or []]


def parse(agent, text: str) -> Dict:
    return asyncio.run(agent.parse_message(text))


@pytest.mark.slow
def test_recipe_trains_and_answers(agent):
    recipe, bot = agent
    assert parse(bot, "where is my order 55555")["intent"]["name"] == "check_order"
    assert replies(bot, "hello there") == ["Hello! How can I help?"]


@pytest.mark.slow
def test_fallback_recipes_ask_to_rephrase(agent):
    recipe, bot = agent
    if "FallbackClassifier" not in (RECIPES / recipe / "config.yml").read_text():
        pytest.skip("no FallbackClassifier in this recipe")
    assert parse(bot, "😡")["intent"]["name"] == "nlu_fallback"
    assert replies(bot, "😡") == ["Sorry, I didn't get that. Could you rephrase?"]


@pytest.mark.slow
def test_entity_recipe_extracts_entities(agent):
    recipe, bot = agent
    if recipe != "entities":
        pytest.skip("only the entities recipe extracts entities")
    for text, value in [("can you check order 48213", "48213"),
                        ("my order 90210 never came", "90210")]:
        found = [(e["entity"], e["value"]) for e in parse(bot, text)["entities"]]
        assert ("order_id", value) in found, (text, found)


@pytest.mark.slow
def test_retrieval_recipe_answers_faqs_and_chitchat_through_rules(agent):
    recipe, bot = agent
    if recipe != "retrieval":
        pytest.skip("only the retrieval recipe has retrieval intents")
    parsed = parse(bot, "are you open on saturday")
    assert parsed["intent"]["name"] == "faq"
    selected = parsed["response_selector"]["default"]["response"]
    assert selected["intent_response_key"] == "faq/ask_opening_hours"
    assert selected["utter_action"] == "utter_faq/ask_opening_hours"
    assert replies(bot, "are you open on saturday") == [
        "We're open Monday to Saturday, 9am to 6pm."]
    # a response key with a single example
    assert replies(bot, "do you take paypal") == ["We accept cards, PayPal and Apple Pay."]
    assert replies(bot, "what is your name") == ["I'm the shop's assistant."]


@pytest.mark.slow
def test_out_of_scope_recipe_answers_off_topic_messages_with_its_rule(agent):
    recipe, bot = agent
    if recipe != "out_of_scope":
        pytest.skip("only the out_of_scope recipe sets out_of_scope_intent")
    for text in ["what's the best pizza topping", "can you sing me a song"]:
        assert parse(bot, text)["intent"]["name"] == "out_of_scope", text
        assert replies(bot, text) == ["Sorry, I can only help with orders and refunds."]
