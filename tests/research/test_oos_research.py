"""Out-of-scope research code (``research/oos.py``): the in-scope score candidates, the
out-of-scope tasks built from a corpus, and one task evaluated end to end (tiny encoder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rasa_meta.runtime.config import FewShotConfig
from rasa_meta.runtime.encoder import SHIPPED_ENCODER_DIR
from rasa_meta.runtime.in_scope import SCORER_FILE
from rasa_meta.runtime.model import FewShotIntentModel
from rasa_meta.training.corpus import IntentCorpus
from research.oos import (
    SCORE_CANDIDATES,
    OOSTask,
    candidate_scores,
    evaluate_task,
    held_out_intents,
    intent_means,
    oos_tasks,
)
from tests.conftest import TOY_DATA, toy_corpus

OFF_TOPIC = ["what is the capital of peru", "play some jazz music", "how tall is everest",
             "tell me a joke"]


@pytest.fixture(scope="module")
def encoder_with_scorer(tiny_encoder_dir, tmp_path_factory) -> Path:
    """The tiny encoder with the shipped in-scope scorer beside it (so ``learned`` scores)."""
    out = tmp_path_factory.mktemp("oos-research") / "encoder"
    shutil.copytree(tiny_encoder_dir, out)
    shutil.copy(SHIPPED_ENCODER_DIR / SCORER_FILE, out / SCORER_FILE)
    return out


@pytest.fixture(scope="module")
def model(encoder_with_scorer) -> FewShotIntentModel:
    m = FewShotIntentModel(FewShotConfig(encoder=str(encoder_with_scorer), device="cpu",
                                         epochs=0, head_steps=5))
    texts, labels = toy_corpus()
    return m.fit_embeddings(m.embed(texts), labels, texts)


def test_intent_means_are_the_examples_means(model, encoder_with_scorer):
    head = model.head
    support, targets = head.support.numpy(), head.support_targets.numpy()
    expected = np.stack([support[targets == i].mean(0) for i in range(len(head.labels))])
    assert np.allclose(intent_means(head).numpy(), expected, atol=1e-6)
    # without intent names in the prototypes, those are the means normalised
    plain = FewShotIntentModel(FewShotConfig(encoder=str(encoder_with_scorer), device="cpu",
                                             epochs=0, head_steps=0, label_name_weight=0))
    texts, labels = toy_corpus()
    plain.fit_embeddings(plain.embed(texts), labels, texts)
    assert torch.allclose(torch.nn.functional.normalize(intent_means(plain.head), dim=-1),
                          plain.head.prototypes, atol=1e-6)


def test_every_candidate_scores_every_query(model):
    queries = model.embed(["hello there", "refund please"] + OFF_TOPIC)
    scores = candidate_scores(model, queries)
    assert sorted(scores) == sorted(SCORE_CANDIDATES)
    assert all(v.shape == (len(queries),) and np.isfinite(v).all() for v in scores.values())
    assert np.allclose(scores["max_cosine"], model.head.similarities(queries).max(1).values)
    assert (scores["mahalanobis"] <= 1e-6).all()
    # an intent's own mean is at distance 0 from it: the highest Mahalanobis score there is
    at_mean = candidate_scores(model, intent_means(model.head)[:1])["mahalanobis"]
    assert at_mean[0] == pytest.approx(0.0, abs=1e-3)


def write_split(folder: Path, texts, labels) -> None:
    folder.mkdir(parents=True)
    (folder / "seq.in").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (folder / "label").write_text("\n".join(labels) + "\n", encoding="utf-8")


def test_a_corpus_without_an_oos_split_holds_a_quarter_of_its_intents_out(tmp_path):
    intents = [f"intent_{i}" for i in range(8)]
    for split, per in (("train", 4), ("valid", 2), ("test", 2)):
        write_split(tmp_path / "TOY" / split,
                    [f"{split} {i} {k}" for i in intents for k in range(per)],
                    [i for i in intents for _ in range(per)])
    held = held_out_intents(intents, 0.25, seed=0)
    assert len(held) == 2 and held == held_out_intents(reversed(intents), 0.25, seed=0)
    tasks = oos_tasks("TOY", ["2", "full"], seed=0, root=tmp_path)
    assert [(t.shots, t.oos) for t in tasks] == [("2", "held-out intents"),
                                                 ("full", "held-out intents")]
    few, full = tasks
    for task in tasks:
        assert not set(held) & (set(task.train.labels) | set(task.valid.labels))
        assert len(task.valid_oos) == len(task.test_oos) == 2 * len(held)
        assert all(t.split()[1] in held for t in task.valid_oos + task.test_oos)
    assert len(full.train.texts) == 4 * 6 and len(few.train.texts) == 2 * 6


def test_evaluate_task_reports_every_candidate_and_operating_point(encoder_with_scorer):
    texts, labels = toy_corpus()
    train = IntentCorpus("toy", texts[::2] + texts[1::4], labels[::2] + labels[1::4])
    test = IntentCorpus("toy-test", texts[1::2], labels[1::2])
    task = OOSTask("toy", "oos", "full", 0, train, test, test, OFF_TOPIC[:2], OFF_TOPIC[2:])
    rows = evaluate_task(task, str(encoder_with_scorer), {"epochs": 0, "head_steps": 5},
                         methods=("learned", "similarity"), targets={"floor": 0.5})
    assert [r["in_scope_method"] for r in rows] == ["learned", "similarity"]
    for row in rows:
        assert row["intents"] == len(TOY_DATA) and row["train_examples"] == len(train.texts)
        assert sorted(row["auroc"]["test"]) == sorted(SCORE_CANDIDATES)
        assert set(row["operating_points"]) == {"balanced", "in-scope -3pt", "floor",
                                                "default threshold", "no fallback"}
        assert row["operating_points"]["no fallback"]["oos_recall"] == 0.0
        assert 0.0 <= row["valid_best_threshold"] <= 1.0
