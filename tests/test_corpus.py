"""Corpus registry, leave-one-dataset-out and few-shot tasks on the shared corpora."""

from __future__ import annotations

import pytest

from rasa_meta.tooling.evaluation import few_shot_task
from rasa_meta.training.corpus import (
    CORPORA,
    META_TRAINING_CORPORA,
    IntentCorpus,
    UnknownCorpusError,
    corpus_family,
    data_root,
    leave_out,
    load_corpus,
)

needs_data = pytest.mark.skipif(
    not (data_root() / "CLINC150" / "train").is_dir(), reason="shared corpora not present"
)


@needs_data
@pytest.mark.parametrize("name", sorted(CORPORA))
def test_every_registered_corpus_loads(name):
    corpus = load_corpus(name)
    assert corpus.name == name and len(corpus) > 500 and len(corpus.intents) >= 7
    assert all(t.strip() for t in corpus.texts[:200])
    if name in {"CLINC150", "SGD", "TOP", "MULTIDOGO", "BITEXT"}:
        assert set(corpus.domains) >= set(corpus.intents) - {"oos"}


def test_unknown_corpus_names_the_registered_ones(tmp_path):
    with pytest.raises(UnknownCorpusError, match="Unknown corpus 'HWU64'.*CLINC150"):
        load_corpus("HWU64", root=tmp_path)
    with pytest.raises(UnknownCorpusError, match="RASA_META_DATA"):
        load_corpus("sgd", root=tmp_path)  # registered (any case), but not under this root


def _corpus(name, intents, domains=None):
    texts = [f"{i} {j}" for i in intents for j in range(3)]
    labels = [i for i in intents for _ in range(3)]
    return IntentCorpus(name, texts, labels, domains or {})


def test_leave_out_drops_the_family_and_related_domains():
    clinc = _corpus("CLINC150", ["balance", "card_limit", "weather"],
                    {"balance": "banking", "card_limit": "credit_cards", "weather": "utility"})
    corpora = [_corpus("BANKING77", ["a"]), _corpus("BANKING77-OOS", ["b"]), clinc,
               _corpus("SGD", ["c"])]
    kept = leave_out(corpora, ["banking77"])
    assert [c.name for c in kept] == ["CLINC150:without-banking+credit_cards", "SGD"]
    assert corpus_family(kept[0].name) == "CLINC150"
    assert kept[0].intents == ["weather"] and len(kept[0]) == 3
    assert [c.name for c in leave_out(corpora, ["CLINC150"])] == [
        "BANKING77", "BANKING77-OOS", "SGD"]
    assert corpus_family("BANKING77-OOS/train") == "BANKING77"
    assert set(META_TRAINING_CORPORA) <= set(CORPORA)


@needs_data
def test_drawn_few_shot_tasks_are_seeded_complete_and_disjoint_from_test():
    train, test = few_shot_task("SGD", "5", seed=1)
    again, _ = few_shot_task("SGD", "5", seed=1)
    other, _ = few_shot_task("SGD", "5", seed=2)
    assert train.texts == again.texts and train.texts != other.texts
    counts = {lab: train.labels.count(lab) for lab in set(train.labels)}
    assert set(counts.values()) == {5}
    assert set(test.labels) <= set(train.labels)  # full label set: every test intent learnable
    assert not set(zip(train.texts, train.labels)) & set(zip(test.texts, test.labels))
    fixed, _ = few_shot_task("BANKING77", "10", seed=3)
    assert len(fixed) == 770 and fixed.name == "BANKING77/train_10"


@needs_data
def test_shot_counts_without_a_fixed_split_are_drawn_per_seed():
    one, _ = few_shot_task("BANKING77", "1", seed=0)
    again, _ = few_shot_task("BANKING77", "1", seed=0)
    other, _ = few_shot_task("BANKING77", "1", seed=1)
    assert len(one) == 77 and one.texts == again.texts and one.texts != other.texts
