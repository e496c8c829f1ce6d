"""`rasa-meta calibrate` on a trained Rasa model: a messages file, a real SQLite tracker store,
one-line errors, and `--write`."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from rasa_meta.runtime.encoder import SHIPPED_ENCODER_DIR
from rasa_meta.runtime.in_scope import SCORER_FILE
from rasa_meta.runtime.traffic_share import fallback_threshold
from rasa_meta.tooling.cli import main as cli_main
from research.traffic import write_tracker_store
from tests.conftest import TOY_DATA

# Messages far from every toy intent.
OFF_TOPIC = ["what is the capital of peru", "play some jazz music", "how tall is mount everest",
             "book a table for two tonight", "what's the weather in oslo", "tell me a joke",
             "convert ten miles to kilometres", "who won the world cup in 1998"]
IN_SCOPE = [t for texts in TOY_DATA.values() for t in texts]

CONFIG = """\
recipe: default.v1
language: en
pipeline:
  # the classifier, then the fallback
  - name: rasa_meta.MetaIntentClassifier
    encoder: {encoder}
    epochs: 0
    head_steps: 10
  - name: FallbackClassifier
    threshold: 0.5
    ambiguity_threshold: 0.05
"""


@pytest.fixture(scope="module")
def bot(tmp_path_factory, tiny_encoder_dir) -> Path:
    """A Rasa NLU model on the toy data, with the tiny encoder and the shipped in-scope scorer
    (the scorer's features do not depend on the encoder): trained once, only read here."""
    from rasa.model_training import train_nlu

    work = tmp_path_factory.mktemp("calibrate-bot")
    encoder = work / "encoder"
    shutil.copytree(tiny_encoder_dir, encoder)
    shutil.copy(SHIPPED_ENCODER_DIR / SCORER_FILE, encoder / SCORER_FILE)
    (work / "config.yml").write_text(CONFIG.format(encoder=encoder))
    nlu = ["version: \"3.1\"", "nlu:"]
    for intent, texts in TOY_DATA.items():
        nlu += [f"- intent: {intent}", "  examples: |"] + [f"    - {t}" for t in texts]
    (work / "nlu.yml").write_text("\n".join(nlu) + "\n")
    model = train_nlu(str(work / "config.yml"), str(work / "nlu.yml"), str(work / "models"),
                      fixed_model_name="bot")
    assert model is not None
    return Path(model)


def calibrate(capsys, *args):
    code = cli_main(["calibrate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def calibrate_json(capsys, *args) -> dict:
    code, out, err = calibrate(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_calibrate_on_a_messages_file(bot, tmp_path, capsys):
    inside = tmp_path / "inside.txt"
    inside.write_text("\n".join(IN_SCOPE) + "\n\n")
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("\n".join(IN_SCOPE[:8] + OFF_TOPIC * 3) + "\n")
    a = calibrate_json(capsys, "--model", str(bot), "--messages", str(inside))
    b = calibrate_json(capsys, "--model", str(bot), "--messages", str(mixed))
    assert a["messages"] == len(IN_SCOPE) and b["messages"] == 8 + 3 * len(OFF_TOPIC)
    for result in (a, b):
        low, high = result["interval"]
        assert 0 <= low <= result["out_of_scope_share"] <= high <= 1
        assert result["threshold"] == pytest.approx(
            fallback_threshold(result["out_of_scope_share"], result["configured_share"]),
            abs=1e-3)
        assert result["current_threshold"] == pytest.approx(0.5)
    # more off-topic traffic: a higher share, and (shares are kept above 0.5 %) no lower
    # threshold for it
    assert b["out_of_scope_share"] > a["out_of_scope_share"]
    assert b["threshold"] >= a["threshold"]
    costly = calibrate_json(capsys, "--model", str(bot), "--messages", str(mixed),
                            "--cost-wrong", "3")
    assert costly["out_of_scope_share"] == pytest.approx(b["out_of_scope_share"], abs=1e-6)
    assert costly["threshold"] > b["threshold"]
    code, out, _ = calibrate(capsys, "--model", str(bot), "--messages", str(mixed))
    assert code == 0
    assert "out-of-scope share" in out and f"{b['threshold']:.2f}" in out


def test_calibrate_reads_a_real_sqlite_tracker_store(bot, tmp_path, capsys):
    now = time.time()
    texts = IN_SCOPE[:6] + OFF_TOPIC
    db = tmp_path / "rasa.db"
    write_tracker_store(db, [
        [(t, "greet", 0.9, now - 3600 + 10 * k) for k, t in enumerate(texts[:7])],
        [(t, "nlu_fallback", 0.3, now - 600 + 10 * k) for k, t in enumerate(texts[7:])]
        + [("/affirm", "affirm", 1.0, now - 100)],
        [("an old message", "greet", 0.9, now - 30 * 86400)],
    ], progress=False)
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text("tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: rasa.db\n")
    stored = calibrate_json(capsys, "--model", str(bot), "--endpoints", str(endpoints),
                            "--since", "7d")
    assert stored["messages"] == len(texts)  # the button payload and the old one left out
    assert "SQLTrackerStore" in stored["tracker_store"]
    same = tmp_path / "same.txt"
    same.write_text("\n".join(texts) + "\n")
    from_file = calibrate_json(capsys, "--model", str(bot), "--messages", str(same))
    assert stored["out_of_scope_share"] == pytest.approx(from_file["out_of_scope_share"],
                                                         abs=1e-6)


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rasa-meta calibrate:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_empty_or_unreadable_sources_are_one_line_errors(bot, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert_one_line_error(*calibrate(capsys, "--model", str(bot), "--messages", str(empty))[::2],
                          "holds no messages")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81 not text")
    assert_one_line_error(*calibrate(capsys, "--model", str(bot), "--messages", str(binary))[::2],
                          "cannot read")
    assert_one_line_error(*calibrate(capsys, "--model", str(bot), "--messages",
                                     str(tmp_path / "missing.txt"))[::2], "no messages file")
    from rasa.core.tracker_store import SQLTrackerStore

    SQLTrackerStore(dialect="sqlite", db=str(tmp_path / "fresh.db")).engine.dispose()
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text("tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: fresh.db\n")
    assert_one_line_error(*calibrate(capsys, "--model", str(bot), "--endpoints",
                                     str(endpoints))[::2], "holds no conversations")
    inside = tmp_path / "inside.txt"
    inside.write_text("\n".join(IN_SCOPE) + "\n")
    assert_one_line_error(*calibrate(capsys, "--model", str(tmp_path / "nope.tar.gz"),
                                     "--messages", str(inside))[::2], "no model")


def test_write_sets_the_threshold_and_leaves_every_other_line(bot, tmp_path, capsys):
    config = tmp_path / "config.yml"
    original = (bot.parent.parent / "config.yml").read_text() + (
        "policies:\n  - name: RulePolicy   # keep\n    core_fallback_threshold: 0.3\n")
    config.write_text(original)
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("\n".join(IN_SCOPE[:8] + OFF_TOPIC * 3) + "\n")
    result = calibrate_json(capsys, "--model", str(bot), "--messages", str(mixed),
                            "--write", str(config))
    before = original.splitlines(keepends=True)
    after = config.read_text().splitlines(keepends=True)
    assert len(before) == len(after)
    changed = [(x, y) for x, y in zip(before, after) if x != y]
    assert changed == [("    threshold: 0.5\n", f"    threshold: {result['threshold']:.2f}\n")]
    assert result["written_to"] == str(config)


def test_the_inbox_reports_the_same_estimate(bot, tmp_path, capsys):
    now = time.time()
    texts = IN_SCOPE[:6] + OFF_TOPIC
    write_tracker_store(tmp_path / "rasa.db",
                        [[(t, "greet", 0.9, now - 600 + 10 * k) for k, t in enumerate(texts)]],
                        progress=False)
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text("tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: rasa.db\n")
    expected = calibrate_json(capsys, "--model", str(bot), "--endpoints", str(endpoints))
    out = tmp_path / "report"
    code = cli_main(["inbox", "--endpoints", str(endpoints), "--model", str(bot),
                     "--output-dir", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    share = json.loads((out / "inbox.json").read_text())["traffic_share"]
    assert share["out_of_scope_share"] == pytest.approx(expected["out_of_scope_share"], abs=1e-6)
    assert share["threshold"] == pytest.approx(expected["threshold"], abs=1e-6)
    assert f"{share['threshold']:.2f}" in (out / "inbox.md").read_text()
    assert "Out of scope (estimated)" in printed
