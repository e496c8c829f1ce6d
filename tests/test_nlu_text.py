"""One rule for "the same text" and one entity-annotation pattern, shared by every tool:
`check-data`, the inbox (repeats, and its draft) and the NLU reader agree with each other and
with Rasa's own reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rasa_meta.tooling.inbox import distinct_texts
from rasa_meta.tooling.inbox_report import draft_yaml
from rasa_meta.tooling.inbox_traffic import Traffic, UserMessage
from rasa_meta.tooling.nlu_text import normalise_text, yaml_safe_example
from rasa_meta.tooling.overlap import build_overlap_report
from rasa_meta.training.corpus import ENTITY_ANNOTATION, load_rasa_nlu

# (a, b, the same text?): case (also beyond ASCII), spacing and punctuation at either end
# are ignored; punctuation inside a text is not
PAIRS = [
    ("Where is my order?", "where is my order", True),
    ("Hello, ", "hello", True),
    ("hello:", "  HELLO", True),
    ("...hi there", "hi there", True),
    ("Straße", "STRASSE", True),
    ("hello there", "hello, where", False),
    ("refund", "refunds", False),
]


def inbox_folds(a: str, b: str) -> bool:
    """Does the inbox count ``b`` as a repeat of ``a``?"""
    traffic = Traffic([UserMessage("s1", 0.0, a), UserMessage("s2", 1.0, b)], "test", 2, 2)
    return len(distinct_texts(traffic).texts) == 1


def check_data_flags(a: str, b: str) -> bool:
    """Does `check-data` report ``a`` and ``b`` (under two intents) as the same text?"""
    emb = np.eye(2, 8)  # orthogonal: only identical text can make them duplicates
    report = build_overlap_report([a, b], ["one", "two"], emb, min_examples=1)
    return any(d.identical_text for d in report.duplicates)


def draft_leaves_out(a: str, b: str) -> bool:
    """Does the inbox's draft leave ``b`` out because ``a`` is a training example?"""
    result = {"generated_at": "now", "fallback": {"low_confidence": 0.7},
              "summary": {"unhandled": 1, "messages": 1}, "review": [],
              "clusters": [{"id": 1, "name": "new_x", "kind": "new_intent", "texts": [b],
                            "messages": 1, "senders": 1, "nearest_intent": "one",
                            "similarity": 0.1}]}
    return "new_x" not in draft_yaml(result, max_examples=5, training_texts=[a])


@pytest.mark.parametrize("a, b, same", PAIRS)
def test_the_inbox_and_check_data_agree_on_what_the_same_text_is(a, b, same):
    assert (normalise_text(a) == normalise_text(b)) is same
    assert inbox_folds(a, b) is same
    assert check_data_flags(a, b) is same
    assert draft_leaves_out(a, b) is same


# Example lines and whether Rasa's reader sees an entity annotation in them.
ANNOTATED = [
    "buy [shoes](product) now",
    "from [Berlin](city:BER) to [Paris](city)",
    'a [large]{"entity": "size", "value": "l"} pizza',
    'book [two]["entity": "number"] tickets',  # a list of entity dicts
    "[a][b](c)",
]
PLAIN = [
    "see [the list] (attached)",  # a space: not an annotation
    "an empty [](x) pair",
    "brackets [like this] only",
    "a (parenthesis) and {braces}",
]


def test_the_entity_pattern_finds_what_rasas_reader_finds():
    from rasa.shared.nlu.training_data.entities_parser import ENTITY_REGEX

    for text in ANNOTATED + PLAIN:
        ours = [m.span() for m in ENTITY_ANNOTATION.finditer(text)]
        assert ours == [m.span() for m in ENTITY_REGEX.finditer(text)], text
        assert bool(ours) is (text in ANNOTATED), text


def write_nlu(path: Path, lines) -> Path:
    body = "\n".join(f"    - {line}" for line in lines)
    path.write_text(f'version: "3.1"\nnlu:\n- intent: x\n  examples: |\n{body}\n',
                    encoding="utf-8")
    return path


def test_the_nlu_reader_strips_annotations_as_rasa_does(tmp_path):
    from rasa.shared.nlu.training_data.loading import load_data

    path = write_nlu(tmp_path / "nlu.yml", ANNOTATED + PLAIN)
    rasa = [m.get("text") for m in load_data(str(path)).intent_examples]
    assert load_rasa_nlu(path).texts == rasa


def test_draft_examples_read_back_as_the_texts_without_entities(tmp_path):
    from rasa.shared.nlu.training_data.loading import load_data

    texts = ANNOTATED + PLAIN + ["two\nlines"]
    path = write_nlu(tmp_path / "draft.yml", [yaml_safe_example(t) for t in texts])
    data = load_data(str(path))
    assert not data.entity_examples
    read = [m.get("text") for m in data.intent_examples]
    assert read == [yaml_safe_example(t) for t in texts]
    assert yaml_safe_example("buy [shoes](product)\nnow") == "buy (shoes) (product) now"
    for text in PLAIN:  # nothing Rasa would parse: left as written
        assert yaml_safe_example(text) == text
