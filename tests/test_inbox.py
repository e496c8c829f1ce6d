"""`rasa-meta inbox`: grouping on constructed embeddings, reading real SQLite tracker stores,
clear one-line errors, and (slow) end to end against example_bot served by `rasa run`."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import pytest

from rasa_meta.tooling.cli import main as cli_main
from rasa_meta.tooling.inbox_groups import (
    agglomerative,
    candidate_name,
    cluster_embeddings,
    intent_scale,
    intent_spread,
    prototypes,
    review_confident,
    summarise_clusters,
)
from rasa_meta.tooling.inbox_traffic import InboxError, parse_time, read_traffic
from rasa_meta.tooling.nlu_text import normalise_text, yaml_safe_example
from research.clustering import score_groups
from research.traffic import write_tracker_store
from tests.conftest import REPO

# --- constructed embeddings ------------------------------------------------------------------


def blobs(centres: int, per: int, noise: float, dim: int = 32, seed: int = 0):
    """``per`` unit vectors around each of ``centres`` random directions."""
    rng = np.random.default_rng(seed)
    axes = rng.normal(size=(centres, dim))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    points = np.repeat(axes, per, axis=0) + noise * rng.normal(size=(centres * per, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points, np.repeat(np.arange(centres), per), axes


def test_agglomerative_recovers_separated_groups_and_ignores_scattered_noise():
    points, truth, _ = blobs(3, 15, noise=0.08)
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(10, points.shape[1]))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    emb = np.vstack([points, noise])
    groups: List[Optional[str]] = [f"g{t}" for t in truth] + [None] * len(noise)
    ids = agglomerative(emb, threshold=0.5)
    score = score_groups(ids, groups)
    assert score.coverage == {"g0": 1.0, "g1": 1.0, "g2": 1.0}
    assert all(p == 1.0 for p in score.purity.values())
    assert score.recovered() == 1.0
    # random directions in 32-d are ~orthogonal: each noise point stays alone
    assert len(set(ids[len(points):].tolist())) == len(noise)
    assert np.bincount(ids).max() == 15 and ids[0] in (0, 1, 2)  # 0 = a largest cluster


def test_a_threshold_too_large_merges_the_groups_and_the_score_says_so():
    points, truth, _ = blobs(3, 15, noise=0.08)
    groups = [f"g{t}" for t in truth]
    merged = agglomerative(points, threshold=1.5)
    assert len(set(merged.tolist())) == 1
    assert score_groups(merged, groups).mean_coverage == 0.0  # each group is 1/3 of it


def test_cluster_embeddings_above_the_cap_attaches_the_rest_to_the_nearest_cluster():
    points, truth, axes = blobs(2, 20, noise=0.05)
    far = -axes[:1]  # opposite to group 0: joins nothing
    emb = np.vstack([points, far])
    ids = cluster_embeddings(emb, threshold=0.5, max_points=25,
                             priority=list(range(len(emb), 0, -1)))
    assert len(ids) == len(emb)
    for group in (0, 1):
        assert len(set(ids[:40][truth == group].tolist())) == 1
    assert ids[0] != ids[39]
    assert np.sum(ids == ids[-1]) == 1  # the far point is a cluster of its own


def test_summaries_tell_more_examples_of_an_intent_from_a_new_topic():
    points, truth, axes = blobs(3, 10, noise=0.05, seed=3)
    # training examples of two intents around the first two directions; the third is new
    support = points[truth < 2][::2]
    targets = truth[truth < 2][::2]
    protos = prototypes(support, targets, 2)
    spread = intent_spread(support, targets, 2)
    traffic = points[1::2]  # the other halves, all three directions
    ids = agglomerative(traffic, 0.5)
    counts = [1] * len(traffic)
    senders = [[f"s{i}"] for i in range(len(traffic))]
    clusters, leftover = summarise_clusters(traffic, ids, counts, senders, protos, spread,
                                            ["order", "refund"], min_size=3)
    assert leftover == [] and len(clusters) == 3
    by_truth = {int(truth[1::2][c.members[0]]): c for c in clusters}
    assert by_truth[0].near_existing and by_truth[0].nearest_intent == "order"
    assert by_truth[1].near_existing and by_truth[1].nearest_intent == "refund"
    assert not by_truth[2].near_existing
    assert by_truth[2].similarity < 0.5 < by_truth[0].similarity
    assert sorted(c.id for c in clusters) == [1, 2, 3]


def test_intent_scale_is_the_median_mean_distance_within_an_intent():
    e = np.eye(4)
    # intent 0: identical examples (0); 1 and 3: orthogonal pairs (1); 2: one example (skipped)
    support = np.stack([e[0], e[0], e[1], e[2], e[3], e[0], e[1]])
    targets = np.array([0, 0, 1, 1, 2, 3, 3])
    assert intent_scale(support, targets, 4) == pytest.approx(1.0)
    three = np.stack([e[0], e[1], e[2]])  # three mutually orthogonal examples: mean 1.0
    assert intent_scale(three, np.zeros(3, dtype=int), 1) == pytest.approx(1.0)
    assert intent_scale(e[:2], np.array([0, 1]), 2) == 0.5  # no intent with two examples
    tight, truth, _ = blobs(2, 6, noise=0.05)
    loose, _, _ = blobs(2, 6, noise=0.5)
    assert intent_scale(tight, truth, 2) < 0.1 < intent_scale(loose, truth, 2)


def test_review_flags_confident_predictions_whose_neighbours_disagree():
    points, truth, _ = blobs(2, 6, noise=0.05, seed=4)
    support, intents = points, ["order" if t == 0 else "refund" for t in truth]
    queries = np.vstack([points[0] + 0.01, points[7] + 0.01])
    items = review_confident(queries, ["order", "order"], [0.9, 0.8], support, intents)
    assert [it.index for it in items] == [1]
    assert items[0].neighbours_intent == "refund" and items[0].predicted == "order"
    assert len(items[0].neighbours) == 3


def test_candidate_names_come_from_shared_words_and_do_not_collide():
    texts = ["how many loyalty points do I have", "redeem my loyalty points",
             "loyalty points expiry"]
    assert candidate_name(texts, []) == "new_loyalty_points"
    assert candidate_name(texts, ["new_loyalty_points"]) == "new_loyalty_points_2"
    assert candidate_name(["?", "!"], []) == "new_intent"


def test_normalise_and_yaml_safe_text():
    assert normalise_text("  Hi   there!! ") == normalise_text("hi there")
    assert yaml_safe_example("buy [shoes](product)\nnow") == "buy (shoes) (product) now"


def test_parse_time_forms():
    now = 1_700_000_000.0
    assert parse_time("7d", now) == now - 7 * 86400
    assert parse_time("90m", now) == now - 5400
    assert parse_time("2024-05-01T00:00:00Z") == 1714521600.0
    assert parse_time("2024-05-01T02:00:00+02:00") == 1714521600.0
    assert parse_time(None) is None
    with pytest.raises(InboxError, match="cannot read the time"):
        parse_time("last tuesday")


# --- draft NLU data -----------------------------------------------------------------------


def test_the_draft_loads_with_rasas_reader_and_leaves_out_known_examples(tmp_path):
    from rasa.shared.nlu.training_data.loading import load_data

    from rasa_meta.tooling.inbox_report import draft_yaml

    def cluster(i, name, kind, texts):
        return {"id": i, "name": name, "kind": kind, "messages": len(texts), "senders": 2,
                "nearest_intent": "gift_cards", "similarity": 0.4, "texts": texts}

    result = {
        "generated_at": "2024-05-01T00:00:00+00:00",
        "summary": {"unhandled": 7, "messages": 20},
        "fallback": {"low_confidence": 0.7},
        "review": [],
        "clusters": [
            cluster(1, "new_loyalty_points", "new_intent",
                    ["how many loyalty points: do I have?", "redeem [points](x) # now",
                     "- loyalty points expiry"]),
            cluster(2, "gift_cards", "existing_intent",
                    ["can I buy a voucher", "Do you sell gift cards"]),
        ],
    }
    text = draft_yaml(result, max_examples=20, training_texts=["do you sell gift cards"])
    path = tmp_path / "nlu_draft.yml"
    path.write_text(text, encoding="utf-8")
    data = load_data(str(path))
    examples = {(m.get("intent"), m.get("text")) for m in data.intent_examples}
    assert examples == {
        ("new_loyalty_points", "how many loyalty points: do I have?"),
        ("new_loyalty_points", "redeem (points) (x) # now"),
        ("new_loyalty_points", "- loyalty points expiry"),
        ("gift_cards", "can I buy a voucher"),
    }
    assert not data.entity_examples


# --- reading real SQLite tracker stores ----------------------------------------------------


def conversation(texts, start, intent="greet", confidence=0.9):
    return [(t, intent, confidence, start + 10 * k) for k, t in enumerate(texts)]


@pytest.fixture
def sqlite_store(tmp_path):
    """A SQLite tracker store written by Rasa's SQLTrackerStore: two conversations a day
    apart, one with a button payload."""
    db = tmp_path / "rasa.db"
    now = time.time()
    write_tracker_store(db, [
        conversation(["hi", "where is my parcel", "/affirm"], now - 86400),
        conversation(["do you have a loyalty programme", "bye"], now - 60, "nlu_fallback",
                     0.4),
    ], progress=False)
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text("tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: rasa.db\n")
    return endpoints


def test_reads_user_messages_through_rasas_sql_tracker_store(sqlite_store, monkeypatch):
    monkeypatch.chdir(sqlite_store.parent.parent)  # db is found beside endpoints.yml
    traffic = read_traffic(sqlite_store, progress=False)
    assert sorted(m.text for m in traffic.messages) == sorted(
        ["hi", "where is my parcel", "do you have a loyalty programme", "bye"])
    assert traffic.skipped == {"intent shortcut (/intent)": 1}
    assert traffic.conversations == traffic.conversations_in_store == 2
    assert "SQLTrackerStore" in traffic.store
    loyalty = next(m for m in traffic.messages if "loyalty" in m.text)
    assert (loyalty.recorded_intent, loyalty.recorded_confidence) == ("nlu_fallback", 0.4)
    recent = read_traffic(sqlite_store, since=parse_time("1h"), progress=False)
    assert sorted(m.text for m in recent.messages) == ["bye", "do you have a loyalty programme"]
    assert recent.conversations == 1
    older = read_traffic(sqlite_store, until=parse_time("1h"), progress=False)
    assert sorted(m.text for m in older.messages) == ["hi", "where is my parcel"]


def run_cli(args, capsys):
    code = cli_main(["inbox", "--no-progress", "--model", "no-such-model.tar.gz", *args])
    err = capsys.readouterr().err
    return code, err


def assert_one_line(err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.startswith("rasa-meta inbox:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_window_without_messages_is_a_clear_error(sqlite_store, capsys):
    code, err = run_cli(["--endpoints", str(sqlite_store), "--until", "2001-01-01"], capsys)
    assert code == 2
    assert_one_line(err, "2 conversation(s) but no user message", "widen --since")
    code, err = run_cli(["--endpoints", str(sqlite_store), "--since", "1h", "--until", "2h"],
                        capsys)
    assert code == 2
    assert_one_line(err, "time window is empty")


def test_no_tracker_store_configured(tmp_path, capsys):
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text("action_endpoint:\n  url: http://localhost:5055/webhook\n")
    code, err = run_cli(["--endpoints", str(endpoints)], capsys)
    assert code == 2
    assert_one_line(err, "configures no tracker_store", "in memory")
    code, err = run_cli(["--endpoints", str(tmp_path / "missing.yml")], capsys)
    assert code == 2
    assert_one_line(err, "no endpoints file")


def test_missing_sqlite_file_is_not_created(tmp_path, capsys):
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text("tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: nowhere.db\n")
    code, err = run_cli(["--endpoints", str(endpoints)], capsys)
    assert code == 2
    assert_one_line(err, "no SQLite tracker store", "nowhere.db")
    assert not (tmp_path / "nowhere.db").exists()


def test_empty_sqlite_stores(tmp_path, capsys):
    from rasa.core.tracker_store import SQLTrackerStore

    endpoints = tmp_path / "endpoints.yml"
    sqlite3.connect(tmp_path / "blank.db").close()  # a database file without tables
    endpoints.write_text("tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: blank.db\n")
    code, err = run_cli(["--endpoints", str(endpoints)], capsys)
    assert code == 2
    assert_one_line(err, "holds no conversations yet")
    SQLTrackerStore(dialect="sqlite", db=str(tmp_path / "fresh.db")).engine.dispose()
    endpoints.write_text("tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: fresh.db\n")
    code, err = run_cli(["--endpoints", str(endpoints)], capsys)
    assert code == 2
    assert_one_line(err, "holds no conversations", "have users talked to the bot")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def test_unreachable_postgres_is_one_line_and_quick(tmp_path, capsys):
    pytest.importorskip("psycopg2")
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(
        f"tracker_store:\n  type: SQL\n  dialect: postgresql\n  url: 127.0.0.1\n"
        f"  port: {closed_port()}\n  db: rasa\n  username: rasa\n  password: secret\n")
    started = time.perf_counter()
    code, err = run_cli(["--endpoints", str(endpoints)], capsys)
    assert code == 2
    assert time.perf_counter() - started < 30  # Rasa's own store would retry forever
    assert_one_line(err, "cannot reach the SQL tracker store", "postgresql: 127.0.0.1")


@pytest.mark.slow  # a fresh interpreter that imports Rasa
def test_unreachable_redis_through_the_console_script_has_no_traceback(tmp_path):
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(f"tracker_store:\n  type: redis\n  url: 127.0.0.1\n"
                         f"  port: {closed_port()}\n")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "rasa-meta"), "inbox", "--endpoints",
         str(endpoints), "--model", "no-such-model.tar.gz", "--no-progress"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert_one_line(done.stderr, "cannot read conversations", "(redis: 127.0.0.1", "Connection")


# --- end to end: example_bot served by `rasa run`, real SQLite tracker store ---------------


@pytest.fixture(scope="module")
def trained_example_bot(tmp_path_factory) -> Path:
    import shutil

    work = tmp_path_factory.mktemp("inbox-bot")
    for name in ("config.yml", "domain.yml", "data"):
        src = REPO / "example_bot" / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "rasa"), "train", "--fixed-model-name", "bot",
         "--out", "models"],
        cwd=work, env={**os.environ, "RASA_TELEMETRY_ENABLED": "false"},
        capture_output=True, text=True, timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return work / "models" / "bot.tar.gz"


@pytest.mark.slow
def test_inbox_over_real_traffic_finds_the_missing_intent(trained_example_bot, tmp_path):
    from rasa.shared.nlu.training_data.loading import load_data

    from research.traffic import (
        conversations,
        free_port,
        load_traffic,
        send,
        serve,
        write_endpoints,
    )

    traffic = load_traffic()
    served = tmp_path / "served"
    write_endpoints(served)
    convs = conversations(traffic)
    with serve(trained_example_bot, served, free_port()) as port:
        records = send(port, convs)
    assert len(records) == sum(len(c) for c in convs)
    # the bot itself said it did not understand most of the missing intent's messages
    fallback_replies = sum("rephrase" in " ".join(r["replies"]).lower() for r in records
                           if r["text"] in traffic["missing_intent"])
    assert fallback_replies >= len(traffic["missing_intent"]) // 2

    out = tmp_path / "report"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "rasa-meta"), "inbox", "--endpoints",
         "endpoints.yml", "--model", str(trained_example_bot), "--output-dir", str(out),
         "--since", "1h", "--no-progress"],
        cwd=served, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    result = json.loads((out / "inbox.json").read_text(encoding="utf-8"))
    assert result["summary"]["messages"] == len(records)

    missing = {normalise_text(t) for t in traffic["missing_intent"]}
    cluster_of = {}
    for cluster in result["clusters"]:
        for text in cluster["texts"]:
            cluster_of[normalise_text(text)] = cluster["id"]
    ids = [cluster_of.get(normalise_text(t), -1 - i)
           for i, t in enumerate(traffic["missing_intent"])]
    best = max(set(ids), key=ids.count)
    coverage = ids.count(best) / len(ids)
    assert best > 0 and coverage >= 0.8, (coverage, result["clusters"])
    for cluster in result["clusters"]:  # no cluster mixes them with > 20 % other messages
        texts = [normalise_text(t) for t in cluster["texts"]]
        ours = sum(t in missing for t in texts)
        if ours:
            assert (len(texts) - ours) / len(texts) <= 0.2, cluster
    found = next(c for c in result["clusters"] if c["id"] == best)
    assert found["kind"] == "new_intent"

    data = load_data(str(out / "nlu_draft.yml"))
    drafted = {m.get("text") for m in data.intent_examples if m.get("intent") == found["name"]}
    assert sum(normalise_text(t) in missing for t in drafted) >= 0.8 * len(missing)
    assert (out / "inbox.md").read_text(encoding="utf-8").startswith("# NLU inbox")
    page = (out / "inbox.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in page and found["name"] in page


def test_messages_taken_by_the_out_of_scope_intent_count_as_unhandled():
    import numpy as np

    from rasa_meta.tooling.bot_model import ParsedTexts
    from rasa_meta.tooling.inbox import unhandled_mask

    parsed = ParsedTexts(
        intent=["greet", "out_of_scope", "nlu_fallback", "refund", "out_of_scope/other",
                "chitchat", None],
        top_intent=["greet", "out_of_scope", "refund", "refund", "out_of_scope", "chitchat",
                    None],
        confidence=np.array([0.9, 0.95, 0.2, 0.4, 0.9, 0.9, 0.0]),
        fell_back=np.array([False, False, True, False, False, False, False]),
        embeddings=np.zeros((7, 4), dtype=np.float32),
    )
    assert unhandled_mask(parsed, 0.5).tolist() == [False, True, True, True, True, False, True]
    # another name for the bot's out-of-scope intent: `out_of_scope` is then an intent like any
    named = unhandled_mask(parsed, 0.5, "chitchat").tolist()
    assert named == [False, False, True, True, False, True, True]
