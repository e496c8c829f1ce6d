"""Intent-overlap report (rasa_meta.tooling.overlap), `rasa-meta check-data`, the warnings logged at
training time, and the component's `explain` output.

The overlap tests use hand-built unit vectors, so which pair is closest, which example is
misplaced and which examples are duplicates is known exactly; the CLI and Rasa tests use the
tiny random encoder and check only what does not depend on its (random) geometry."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rasa_meta.tooling.cli import main
from rasa_meta.tooling.overlap import (
    OverlapReport,
    build_overlap_report,
    normalise_text,
    save_heatmap,
    similarity_order,
    training_warnings,
)

DIM = 8
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def e(i: int) -> torch.Tensor:
    v = torch.zeros(DIM, dtype=torch.float64)
    v[i] = 1.0
    return v


def unit(v: torch.Tensor) -> torch.Tensor:
    return F.normalize(v, dim=0)


def cluster(center: torch.Tensor, name: str, n: int = 5) -> List[Tuple[str, str, torch.Tensor]]:
    """``n`` examples around ``center`` whose mean points exactly at it (+-e5, +-e6 wobble)."""
    wobble = [e(5), -e(5), e(6), -e(6)]
    rows = [(f"{name} {k}", name, unit(center + 0.3 * wobble[k % 4])) for k in range(n - 1)]
    if (n - 1) % 2:  # keep the wobble symmetric
        rows[-1] = (rows[-1][0], name, unit(center))
    return rows + [(f"{name} {n - 1}", name, unit(center))]


def split(rows) -> Tuple[List[str], List[str], torch.Tensor]:
    return [r[0] for r in rows], [r[1] for r in rows], torch.stack([r[2] for r in rows])


# check_balance ~ account_balance are close (cosine 0.894); greet and goodbye are orthogonal.
CLOSE = unit(e(0) + 0.5 * e(1))


def clean_rows():
    return (
        cluster(e(0), "check_balance")
        + cluster(CLOSE, "account_balance")
        + cluster(e(2), "greet")
        + cluster(e(3), "goodbye")
    )


# --- the report on constructed data -----------------------------------------------------------


def test_closest_pair_is_first_and_the_only_one_flagged():
    report = build_overlap_report(*split(clean_rows()), similarity_threshold=0.8)
    first = report.similar_intents[0]
    assert {first.intent_a, first.intent_b} == {"check_balance", "account_balance"}
    assert first.similarity == pytest.approx(1 / np.sqrt(1.25), abs=1e-6)
    assert first.above_threshold
    assert [(p.intent_a, p.intent_b) for p in report.close_pairs] == [
        (first.intent_a, first.intent_b)
    ]
    sims = [p.similarity for p in report.similar_intents]
    assert sims == sorted(sims, reverse=True)
    assert len(report.similar_intents) == 6  # all pairs of 4 intents (top_pairs=10)


def test_pairs_above_threshold_are_kept_beyond_top_n():
    report = build_overlap_report(*split(clean_rows()), similarity_threshold=0.0, top_pairs=1)
    assert len(report.similar_intents) == 6  # every pair is >= 0: all flagged, all kept
    report = build_overlap_report(*split(clean_rows()), similarity_threshold=0.99, top_pairs=2)
    assert len(report.similar_intents) == 2 and not report.close_pairs


def test_clean_data_has_no_findings():
    rows = cluster(e(0), "a") + cluster(e(2), "b") + cluster(e(3), "c")
    report = build_overlap_report(*split(rows))
    assert not report.has_findings
    assert report.summary_lines() == []
    assert "No problems found." in report.to_table()


def test_misplaced_example_found_with_leave_one_out():
    """x1 is nearer its own intent only while it counts itself: with its own prototype rebuilt
    from the other example (x2) it is nearer to 'other'. The singleton 'lonely' is nearer to
    'other' too but cannot be judged (no other example of it), so it is not reported."""
    x2 = unit(e(1) + 0.5 * e(0))
    other_center = unit(e(0) + 1.2 * e(2))
    rows = [
        ("x1", "mine", e(0)),
        ("x2", "mine", x2),
        ("o1", "other", unit(other_center + 0.1 * e(3))),
        ("o2", "other", unit(other_center - 0.1 * e(3))),
        ("o3", "other", other_center),
        ("lonely", "single", unit(e(2) + 0.3 * e(3))),  # nearest 'other', but alone
    ]
    report = build_overlap_report(*split(rows))
    assert [m.text for m in report.misplaced_examples] == ["x1"]
    m = report.misplaced_examples[0]
    assert (m.intent, m.nearest_intent) == ("mine", "other")
    assert m.own_similarity == pytest.approx(float(e(0) @ x2), abs=1e-6)  # x2 alone
    assert m.other_similarity == pytest.approx(float(e(0) @ other_center), abs=1e-6)
    # Counting x1 in its own prototype would hide it:
    with_self = float(e(0) @ unit(e(0) + x2))
    assert with_self > m.other_similarity
    pair = next(p for p in report.similar_intents if {p.intent_a, p.intent_b} == {"mine", "other"})
    assert pair.misplaced == 1


def test_example_placed_under_the_wrong_intent():
    """A balance question filed under 'greet' is nearest check_balance."""
    rows = clean_rows() + [("what is my balance", "greet", unit(e(0) + 0.5 * e(7)))]
    report = build_overlap_report(*split(rows))
    assert [(m.text, m.intent, m.nearest_intent) for m in report.misplaced_examples] == [
        ("what is my balance", "greet", "check_balance")
    ]
    assert any("what is my balance" in line for line in report.summary_lines())


def test_duplicates_across_intents_by_text_and_by_embedding():
    rows = clean_rows() + [
        # same text after case/space/punctuation normalising, unrelated embeddings
        ("Hello  there!", "greet", unit(e(2) + 0.1 * e(7))),
        ("hello there", "goodbye", unit(e(3) + 0.1 * e(7))),
        # different texts, (almost) the same vector: cosine 0.995
        ("bye for now", "goodbye", unit(e(7) + 0.1 * e(4))),
        ("cheerio", "greet", unit(e(7) + 0.2 * e(4))),
        # same text twice within one intent: not a cross-intent duplicate
        ("good morning", "greet", unit(e(2) + 0.2 * e(7))),
        ("Good morning", "greet", unit(e(2) + 0.2 * e(7))),
    ]
    report = build_overlap_report(*split(rows), duplicate_threshold=0.95)
    found = {(d.text_a, d.text_b): d for d in report.duplicates}
    assert set(found) == {("Hello  there!", "hello there"), ("bye for now", "cheerio")}
    by_text = found[("Hello  there!", "hello there")]
    assert by_text.identical_text and {by_text.intent_a, by_text.intent_b} == {"greet", "goodbye"}
    by_vector = found[("bye for now", "cheerio")]
    assert not by_vector.identical_text and by_vector.similarity >= 0.95
    assert report.duplicates[0].identical_text  # same-text pairs are listed first
    assert report.duplicates_total == 2


def test_duplicate_threshold_is_honoured():
    rows = clean_rows() + [("cheerio", "greet", unit(e(3) + 0.5 * e(4)))]  # 0.894 to goodbye 4
    def cheerio_found(threshold: float) -> bool:
        report = build_overlap_report(*split(rows), duplicate_threshold=threshold)
        return any("cheerio" in (d.text_a, d.text_b) for d in report.duplicates)

    assert not cheerio_found(0.95)
    assert cheerio_found(0.85)


def test_intents_with_too_few_examples():
    rows = clean_rows() + cluster(e(4), "thanks", n=2) + cluster(e(7), "restart", n=3)
    report = build_overlap_report(*split(rows), min_examples=5)
    assert report.too_few_examples == {"thanks": 2, "restart": 3}
    assert build_overlap_report(*split(rows), min_examples=2).too_few_examples == {}
    assert report.counts["check_balance"] == 5


def test_normalise_text():
    assert normalise_text("  Hello   THERE!? ") == normalise_text("hello there")
    assert normalise_text("hello there") != normalise_text("hello, where")


def test_unnormalised_and_numpy_embeddings_give_the_same_report():
    texts, labels, emb = split(clean_rows())
    a = build_overlap_report(texts, labels, emb)
    b = build_overlap_report(texts, labels, (emb * 3.0).numpy())
    assert a.to_dict() == b.to_dict()


def test_encoder_is_used_when_no_embeddings_are_given():
    texts, labels, emb = split(clean_rows())
    table = dict(zip(texts, emb))
    calls = []

    class FakeEncoder:
        def encode(self, batch, batch_size=64):
            calls.append(len(batch))
            return torch.stack([table[t] for t in batch])

        def unreadable(self, batch):
            return [False] * len(batch)

    report = build_overlap_report(texts, labels, encoder=FakeEncoder())
    assert calls == [len(texts)]
    assert report.to_dict() == build_overlap_report(texts, labels, emb).to_dict()
    with pytest.raises(ValueError):
        build_overlap_report(texts, labels)
    with pytest.raises(ValueError):
        build_overlap_report(texts, labels[:-1], emb)


def test_degenerate_inputs():
    empty = build_overlap_report([], [], torch.zeros(0, DIM))
    assert not empty.has_findings and empty.to_dict()["n_intents"] == 0
    one = build_overlap_report(*split(cluster(e(0), "only", n=2)))
    assert one.similar_intents == [] and one.misplaced_examples == []
    assert one.too_few_examples == {"only": 2}


def messy_report() -> OverlapReport:
    rows = clean_rows() + cluster(e(4), "thanks", n=2) + [
        ("what is my balance", "greet", unit(e(0) + 0.5 * e(7))),
        ("hello | there", "greet", unit(e(2) + 0.1 * e(7))),
        ("Hello | there", "goodbye", unit(e(3) + 0.1 * e(7))),
    ]
    return build_overlap_report(*split(rows), similarity_threshold=0.8)


def test_to_dict_is_json_and_complete():
    report = messy_report()
    data = json.loads(json.dumps(report.to_dict()))
    assert data["n_intents"] == 5 and data["n_examples"] == report.n_examples
    assert data["settings"]["similarity_threshold"] == 0.8
    assert data["similar_intents"][0]["above_threshold"] is True
    assert data["misplaced_examples"][0]["text"] == "what is my balance"
    assert data["duplicates"][0]["identical_text"] is True
    assert data["too_few_examples"] == {"thanks": 2}
    assert len(data["summary"]) == 4
    assert "prototype_similarity" not in data
    matrix = report.to_dict(include_matrix=True)["prototype_similarity"]
    assert matrix["intents"] == report.intents
    assert np.allclose(np.diag(matrix["matrix"]), 1.0, atol=1e-3)


def test_table_and_summary_are_readable():
    report = messy_report()
    table = report.to_table()
    for heading in ("Most similar intents", "closer to another intent", "Near-duplicate",
                    "fewer than 5 examples"):
        assert heading in table
    assert "| check_balance" in table or "| account_balance" in table
    assert "hello \\| there" in table  # pipes in examples do not break the table
    lines = report.summary_lines()
    assert len(lines) == 4 and all(len(line) < 300 for line in lines)
    assert "account_balance ~ check_balance (0.89)" in lines[0]
    assert "thanks (2)" in lines[-1]
    short = report.to_table(max_rows=1)
    assert "more (see report.json)" in short


def test_similarity_order_puts_similar_items_together():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(5), 4)
    sim = np.where(groups[:, None] == groups[None, :], 0.9, 0.1) + rng.uniform(0, 0.05, (20, 20))
    sim = (sim + sim.T) / 2
    perm = rng.permutation(20)
    order = similarity_order(sim[np.ix_(perm, perm)])
    assert sorted(order) == list(range(20))
    ordered_groups = groups[perm][order]
    changes = int((ordered_groups[1:] != ordered_groups[:-1]).sum())
    assert changes == 4  # every group is one contiguous run


@pytest.mark.parametrize("n_intents", [1, 6, pytest.param(150, marks=pytest.mark.slow)])
def test_heatmap_png(tmp_path, n_intents):
    rng = np.random.default_rng(n_intents)
    emb = torch.tensor(rng.normal(size=(n_intents * 2, 16)))
    labels = [f"intent_{i // 2}_with_a_rather_long_name" for i in range(n_intents * 2)]
    report = build_overlap_report([f"t{i}" for i in range(len(labels))], labels, emb)
    path = save_heatmap(report, tmp_path / "sub" / "heat.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image

    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and min(image.shape[:2]) >= 500


def test_training_warnings_from_a_fitted_model():
    texts, labels, emb = split(
        clean_rows() + [("what is my balance", "greet", unit(e(0) + 0.5 * e(7)))]
    )
    names = sorted(set(labels))
    head = SimpleNamespace(
        labels=names,
        support=emb.float(),
        support_targets=torch.tensor([names.index(lab) for lab in labels]),
    )
    model = SimpleNamespace(head=head, texts=texts, config=SimpleNamespace(encoder="minilm"))
    lines = training_warnings(model)
    assert any("what is my balance" in line for line in lines)
    assert "rasa-meta check-data" in lines[-1] and "--encoder minilm" in lines[-1]
    clean = split(cluster(e(0), "a") + cluster(e(2), "b"))
    head.labels, head.support = ["a", "b"], clean[2].float()
    head.support_targets = torch.tensor([0] * 5 + [1] * 5)
    model.texts = clean[0]
    assert training_warnings(model) == []
    assert training_warnings(SimpleNamespace(head=None)) == []
    assert training_warnings(object()) == []  # never raises


# --- `rasa-meta check-data` -------------------------------------------------------------------

NLU_YAML = """version: "3.1"
nlu:
- intent: greet
  examples: |
    - hi
    - hello there
    - good morning
    - hey [Anna](name)
    - hello friend
- intent: goodbye
  examples: |
    - bye
    - see you later
    - Hello there!
    - talk to you soon
    - farewell
- intent: thanks
  examples: |
    - thank you
    - thanks a lot
"""


def test_check_data_writes_report_and_heatmap(tmp_path, tiny_encoder_dir, capsys):
    nlu = tmp_path / "nlu.yml"
    nlu.write_text(NLU_YAML, encoding="utf-8")
    out = tmp_path / "out"
    rc = main(["check-data", str(nlu), "--encoder", str(tiny_encoder_dir),
               "--output-dir", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Intent overlap report: 3 intents, 12 examples" in printed
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["n_intents"] == 3 and report["n_examples"] == 12
    assert report["examples_per_intent"] == {"goodbye": 5, "greet": 5, "thanks": 2}
    assert report["too_few_examples"] == {"thanks": 2}
    assert any(
        d["identical_text"] and {d["text_a"], d["text_b"]} == {"hello there", "Hello there!"}
        for d in report["duplicates"]
    )
    assert len(report["similar_intents"]) == 3
    assert report["prototype_similarity"]["intents"] == ["goodbye", "greet", "thanks"]
    png = out / "overlap_heatmap.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image

    assert matplotlib.image.imread(str(png)).ndim == 3

    rc = main(["check-data", str(tmp_path), "--encoder", str(tiny_encoder_dir),
               "--output-dir", str(out), "--json", "--threshold", "0.5"])
    assert rc == 0  # a folder is searched for NLU files
    printed = json.loads(capsys.readouterr().out)
    assert printed["settings"]["similarity_threshold"] == 0.5
    assert printed["files"] == [str(nlu)]


def test_check_data_missing_file_is_an_error(tmp_path, tiny_encoder_dir, capsys):
    rc = main(["check-data", str(tmp_path / "missing.yml"), "--encoder", str(tiny_encoder_dir),
               "--output-dir", str(tmp_path / "out")])
    assert rc != 0
    assert "missing.yml" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "rules.yml"
    empty.write_text('version: "3.1"\nrules: []\n', encoding="utf-8")
    assert main(["check-data", str(empty), "--encoder", str(tiny_encoder_dir)]) != 0
    assert "no intent examples" in capsys.readouterr().err


# --- in Rasa: `explain` output and the warnings logged by `train` ---------------------------

RASA_DATA: Dict[str, List[str]] = {
    "greet": ["hello there", "hi", "hey how are you", "good morning", "hello friend"],
    "goodbye": ["bye bye", "see you later", "goodbye", "talk to you soon", "Hello there!"],
    "refund": ["i want my money back", "refund my purchase", "how do i get a refund"],
}


def train_component(tmp_path: Path, tiny_encoder_dir: Path, explain: bool):
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource
    from rasa.shared.nlu.training_data.message import Message
    from rasa.shared.nlu.training_data.training_data import TrainingData

    from rasa_meta.component import MetaIntentClassifier

    config = {
        **MetaIntentClassifier.get_default_config(),
        "encoder": str(tiny_encoder_dir),
        "explain": explain,
    }
    (tmp_path / f"storage-{explain}").mkdir()
    storage = LocalModelStorage(tmp_path / f"storage-{explain}")
    clf = MetaIntentClassifier.create(
        config, storage, Resource("x"), ExecutionContext(GraphSchema({}), "1")
    )
    data = TrainingData(
        [Message(data={"text": t, "intent": i}) for i, ts in RASA_DATA.items() for t in ts]
    )
    clf.train(data)

    def parse(text: str):
        return clf.process([Message(data={"text": text})])[0]

    return clf, parse


def test_explain_gives_nearest_training_examples(tmp_path, tiny_encoder_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="rasa_meta"):
        clf, parse = train_component(tmp_path, tiny_encoder_dir, explain=True)
    # Findings certain whatever the encoder: same text under two intents, 3 refund examples.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("near-duplicate" in w for w in warnings)
    assert any("refund (3)" in w for w in warnings)
    assert any("rasa-meta check-data" in w for w in warnings)

    message = parse("hello, how are you?")
    explanation = message.get("intent_explanation")
    assert explanation is not None
    assert "intent_explanation" in message.as_dict(only_output_properties=True)
    assert 0.0 <= explanation["in_scope_probability"] <= 1.0
    ranked = [r["name"] for r in message.get("intent_ranking")]
    k = clf.component_config["explain_top_k"]
    assert [item["intent"] for item in explanation["intents"]] == ranked[:k]
    for item in explanation["intents"]:
        nearest = item["nearest_examples"]
        assert 1 <= len(nearest) <= k
        assert all(ex["text"] in RASA_DATA[item["intent"]] for ex in nearest)
        sims = [ex["similarity"] for ex in nearest]
        assert all(isinstance(s, float) and -1.0001 <= s <= 1.0001 for s in sims)
        assert sims == sorted(sims, reverse=True)
    json.dumps(explanation)  # goes into the JSON parse output as is


def test_no_explanation_when_explain_is_off(tmp_path, tiny_encoder_dir):
    _, parse = train_component(tmp_path, tiny_encoder_dir, explain=False)
    message = parse("hello, how are you?")
    assert message.get("intent")["name"] in RASA_DATA
    assert message.get("intent_explanation") is None
    assert "intent_explanation" not in message.as_dict(only_output_properties=True)
