"""Episode sampler invariants and class-disjoint meta-train/valid splits."""

from __future__ import annotations

import pytest

from rasa_meta.training.corpus import IntentCorpus
from rasa_meta.training.episodes import EpisodeSampler, split_classes


def make_corpus(n_intents=12, per_intent=12, domains=True) -> IntentCorpus:
    texts, labels = [], []
    for i in range(n_intents):
        for j in range(per_intent):
            texts.append(f"intent {i} example {j}")
            labels.append(f"i{i}")
    dom = {f"i{i}": f"d{i % 3}" for i in range(n_intents)} if domains else {}
    return IntentCorpus("toy", texts, labels, dom)


def test_episode_counts_and_targets():
    ep = EpisodeSampler([make_corpus()], n_way=5, k_shot=3, q_query=2, seed=1).sample()
    assert ep.n_way == 5 and len(set(ep.classes)) == 5
    assert len(ep.support_texts) == 15 and len(ep.query_texts) == 10
    assert sorted(ep.support_targets.tolist()) == sorted(list(range(5)) * 3)
    assert sorted(ep.query_targets.tolist()) == sorted(list(range(5)) * 2)
    for text, t in zip(ep.support_texts + ep.query_texts,
                       ep.support_targets.tolist() + ep.query_targets.tolist()):
        assert text.startswith(f"intent {ep.classes[t][1:]} ")
    assert not set(ep.support_texts) & set(ep.query_texts)


def test_same_seed_same_episodes_other_seed_differs():
    a = [e.support_texts for e in EpisodeSampler([make_corpus()], 4, 2, 2, seed=7).take(5)]
    b = [e.support_texts for e in EpisodeSampler([make_corpus()], 4, 2, 2, seed=7).take(5)]
    c = [e.support_texts for e in EpisodeSampler([make_corpus()], 4, 2, 2, seed=8).take(5)]
    assert a == b and a != c


def test_domain_episodes_stay_inside_one_domain():
    corpus = make_corpus()
    sampler = EpisodeSampler([corpus], n_way=3, k_shot=2, q_query=2, seed=0, domain_prob=1.0)
    for ep in sampler.take(20):
        assert ep.domain is not None
        assert {corpus.domains[c] for c in ep.classes} == {ep.domain}


def test_mixed_episodes_cross_domains():
    corpus = make_corpus()
    sampler = EpisodeSampler([corpus], n_way=6, k_shot=2, q_query=2, seed=0, domain_prob=0.0)
    spans = [len({corpus.domains[c] for c in ep.classes}) for ep in sampler.take(20)]
    assert max(spans) > 1


def test_intents_too_small_for_an_episode_are_skipped():
    corpus = make_corpus(n_intents=4, per_intent=3)
    big = make_corpus(n_intents=3, per_intent=10)
    big = IntentCorpus("big", big.texts, [f"b{lab}" for lab in big.labels])
    sampler = EpisodeSampler([corpus, big], n_way=3, k_shot=2, q_query=2, seed=0)
    for ep in sampler.take(10):
        assert all(c.startswith("b") for c in ep.classes)
    with pytest.raises(ValueError):
        EpisodeSampler([corpus], n_way=3, k_shot=2, q_query=2)


def test_meta_split_is_class_disjoint_and_covers_domains():
    corpus = make_corpus(n_intents=30)
    train, valid = split_classes(corpus, valid_fraction=0.2, seed=0)
    assert not set(train.intents) & set(valid.intents)
    assert set(train.intents) | set(valid.intents) == set(corpus.intents)
    assert len(train) + len(valid) == len(corpus)
    assert {corpus.domains[i] for i in valid.intents} == {"d0", "d1", "d2"}
    assert split_classes(corpus, 0.2, seed=0)[1].intents == valid.intents


def test_many_way_episodes_take_every_intent_of_one_corpus():
    a = make_corpus(n_intents=9, per_intent=6)
    b = IntentCorpus("other", [f"x {t}" for t in a.texts], [f"o{lab}" for lab in a.labels])
    sampler = EpisodeSampler([a, b], n_way=0, k_shot=2, q_query=1, seed=3, domain_prob=0.0)
    seen = set()
    for ep in sampler.take(12):
        assert ep.n_way == 9 and len(ep.support_texts) == 18 and len(ep.query_texts) == 9
        assert len({c[0] for c in ep.classes}) == 1  # never mixes corpora
        seen.add(ep.corpus)
    assert seen == {"toy", "other"}
    again = EpisodeSampler([a, b], n_way=0, k_shot=2, q_query=1, seed=3, domain_prob=0.0)
    assert [e.query_texts for e in again.take(12)] == [
        e.query_texts for e in EpisodeSampler(
            [a, b], n_way=0, k_shot=2, q_query=1, seed=3, domain_prob=0.0).take(12)]
    with pytest.raises(ValueError, match="n_way"):
        EpisodeSampler([a], n_way=1)


def test_inner_loop_defaults_are_the_components():
    import inspect

    from rasa_meta.runtime.model import FewShotConfig
    from rasa_meta.training.inner_loop import finetune_encoder

    defaults = {k: p.default for k, p in inspect.signature(finetune_encoder).parameters.items()}
    config = FewShotConfig()
    assert (defaults["epochs"], defaults["learning_rate"], defaults["train_layers"],
            defaults["seed"], defaults["objective"]) == (
        config.epochs, config.finetune_learning_rate, config.finetune_layers,
        config.random_seed, config.finetune_objective)
