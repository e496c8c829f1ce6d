"""Episode sampler invariants and class-disjoint meta-train/valid splits."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
import torch

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
    assert len(ep.support) == 15 and len(ep.query) == 10
    assert sorted(ep.support_targets.tolist()) == sorted(list(range(5)) * 3)
    assert sorted(ep.query_targets.tolist()) == sorted(list(range(5)) * 2)
    for text, t in zip(ep.support + ep.query,
                       ep.support_targets.tolist() + ep.query_targets.tolist()):
        assert text.startswith(f"intent {ep.classes[t][1:]} ")
    assert not set(ep.support) & set(ep.query)


def test_same_seed_same_episodes_other_seed_differs():
    a = [e.support for e in EpisodeSampler([make_corpus()], 4, 2, 2, seed=7).take(5)]
    b = [e.support for e in EpisodeSampler([make_corpus()], 4, 2, 2, seed=7).take(5)]
    c = [e.support for e in EpisodeSampler([make_corpus()], 4, 2, 2, seed=8).take(5)]
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
        assert ep.n_way == 9 and len(ep.support) == 18 and len(ep.query) == 9
        assert len({c[0] for c in ep.classes}) == 1  # never mixes corpora
        seen.add(ep.corpus)
    assert seen == {"toy", "other"}
    again = EpisodeSampler([a, b], n_way=0, k_shot=2, q_query=1, seed=3, domain_prob=0.0)
    assert [e.query for e in again.take(12)] == [
        e.query for e in EpisodeSampler(
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


# --- the one builder draws what the three samplers it replaced drew --------------------------
#
# tests/data/episodes_before_refactor.json was written by the samplers as they were before the
# episode builder (EpisodeSampler, inner_loop.bot_episodes, in_scope.sample_scorer_episode at
# commit 668bf35), on the corpora below and, as hashes, on the real corpora of the shipped
# default encoder's run and of the BANKING77 fold. Same seed, same episodes: exactly.

BEFORE = json.loads(
    (Path(__file__).parent / "data" / "episodes_before_refactor.json").read_text()
)


def _before_corpora():
    texts, labels = [], []
    for i in range(14):
        for j in range(4 + (i * 5) % 13):
            texts.append(f"alpha {i} text {j}")
            labels.append(f"a{i}")
    a = IntentCorpus("alpha", texts, labels, {f"a{i}": f"d{i % 4}" for i in range(14)})
    texts = [f"beta {i} text {j}" for i in range(6) for j in range(12)]
    b = IntentCorpus("beta", texts, [f"b{i}" for i in range(6) for _ in range(12)], {})
    return [a, b]


def _as_dict(ep):
    return {"classes": ep.classes, "support": ep.support,
            "support_targets": ep.support_targets.tolist(), "query": ep.query,
            "query_targets": ep.query_targets.tolist(), "corpus": ep.corpus, "domain": ep.domain}


def test_meta_training_episodes_are_the_ones_drawn_before():
    corpora = _before_corpora()
    for case in BEFORE["sampler"]:
        sampler = EpisodeSampler(corpora, case["n_way"], case["k_shot"], case["q_query"],
                                 seed=case["seed"], domain_prob=case["domain_prob"])
        assert [_as_dict(e) for e in sampler.take(len(case["episodes"]))] == case["episodes"]
    for case in BEFORE["split_classes"]:
        train, valid = split_classes(corpora[0], 0.3, case["seed"])
        assert (train.intents, valid.intents) == (case["train"], case["valid"])


def test_inner_loop_episodes_are_the_ones_drawn_before():
    from rasa_meta.training.inner_loop import bot_episodes

    for case in BEFORE["bot"]:
        rng = random.Random(case["seed"])
        for before in case["epochs"]:
            episodes = bot_episodes(case["labels"], rng, case["n_way"], case["max_per_class"])
            assert [{"support": e.support, "query": e.query,
                     "s_t": e.support_targets.tolist(), "q_t": e.query_targets.tolist()}
                    for e in episodes] == before


def test_scorer_bots_are_the_ones_drawn_before():
    from rasa_meta.training.in_scope import draw_scorer_bot

    gen = torch.Generator().manual_seed(0)
    corpora, names = {}, {}
    for c in range(4):
        corpus = {}
        for i in range(3 + 3 * c):
            n = 2 + (i * 3) % 9
            rows = torch.nn.functional.normalize(torch.randn(n, 8, generator=gen), dim=-1)
            corpus[f"intent_{i}"] = rows
            names.update({tuple(rows[r].tolist()): f"{c}/{i}/{r}" for r in range(n)})
        corpora[f"corpus_{c}"] = corpus

    def ids(rows):
        return [names[tuple(r.tolist())] for r in rows]

    for case in BEFORE["scorer"]:
        rng = random.Random(case["seed"])
        for before in case["draws"]:
            bot = draw_scorer_bot(corpora, rng, case["shots"], case["queries_per_intent"],
                                  case["max_intents"])
            if before is None:
                assert bot is None
                continue
            assert bot is not None
            assert ids(bot.support) == before["support"] and bot.labels == before["labels"]
            assert ids(bot.queries) == before["in_scope"]
            assert ids(bot.out_of_scope) == before["out_of_scope"]


def test_the_shipped_encoders_episodes_are_the_ones_drawn_before():
    """The first 120 training episodes (the shipped default's whole run) and the 12 meta-valid
    episodes of the default recipe on the real corpora, with and without BANKING77."""
    from rasa_meta.training.corpus import data_root
    from rasa_meta.training.meta_train import MetaTrainingArguments, load_meta_corpora

    if not (data_root() / "BANKING77").is_dir():
        pytest.skip("the shared corpora are not available")

    def digest(ep):
        return hashlib.sha256(json.dumps(_as_dict(ep), sort_keys=True).encode()).hexdigest()[:16]

    for case in BEFORE["real"]:
        args = MetaTrainingArguments(exclude=case["exclude"])
        splits = [split_classes(c, args.valid_fraction, args.seed)
                  for c in load_meta_corpora(args)]
        train = EpisodeSampler([t for t, _ in splits], 10, 5, 5, seed=0, domain_prob=0.5)
        valid = EpisodeSampler([v for _, v in splits], 0, 5, 5, seed=10_000, domain_prob=0.5)
        assert [digest(e) for e in train.take(len(case["train"]))] == case["train"]
        assert [digest(e) for e in valid.take(len(case["valid"]))] == case["valid"]


def test_builder_steps_compose():
    from rasa_meta.training.episodes import (
        build_episode,
        epoch_ways,
        fixed_shots,
        group_by_label,
        halves,
        sample_ways,
        shuffled_shots,
    )

    groups = group_by_label(range(9), ["x", "y", "x", "z", "y", "x", "z", "y", "w"])
    assert groups == {"x": [0, 2, 5], "y": [1, 4, 7], "z": [3, 6], "w": [8]}
    rng = random.Random(0)
    assert sorted(sample_ways(sorted(groups), 0, rng)) == ["w", "x", "y", "z"]
    assert len(sample_ways(sorted(groups), 2, rng)) == 2
    chunks = epoch_ways(groups, 3, rng)
    assert [len(c) for c in chunks] == [3, 1] and sorted(sum(chunks, [])) == sorted(groups)
    ep = build_episode(groups, ["x", "y"], fixed_shots(1, 2), rng)
    assert ep.support_labels == ["x", "y"] and ep.query_labels == ["x", "x", "y", "y"]
    ep = build_episode(groups, ["w", "x"], halves(8), rng)
    assert ep.support_labels == ["w", "x"] and ep.query_labels == ["x", "x"]
    # a class with one item has no query under shuffled_shots: it is dropped, targets re-indexed
    ep = build_episode(groups, ["w", "z", "x"], shuffled_shots(5, 1), rng)
    assert ep.classes == ["z", "x"] and ep.support_targets.tolist() == [0, 1, 1]
    assert ep.query_targets.tolist() == [0, 1]
