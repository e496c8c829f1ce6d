"""The mixture head: several prototypes per intent where its examples form groups, k chosen on
the bot's own examples; with one component everywhere it is the prototype head."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from rasa_meta.runtime.heads import (
    HEAD_TYPES,
    MixtureHead,
    PrototypeHead,
    make_head,
    spherical_kmeans,
)
from rasa_meta.runtime.in_scope import in_scope_features, leave_one_out_similarities
from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel


def _near(direction, n: int, gen: torch.Generator, noise: float = 0.05) -> torch.Tensor:
    base = F.normalize(torch.tensor(direction, dtype=torch.float), dim=0)
    return F.normalize(base + noise * torch.randn(n, len(direction), generator=gen), dim=-1)


def _two_group_intent():
    """Intent "inform" is two unrelated groups (4 examples near e1, 2 near e2); "ask" lies
    between e2 and e3, so one mean of "inform" (mostly e1) loses e2-like messages to it."""
    gen = torch.Generator().manual_seed(0)
    support = torch.cat([
        _near([1, 0, 0, 0], 4, gen), _near([0, 1, 0, 0], 2, gen),
        _near([0, 0.7, 0.7, 0], 4, gen), _near([0, 0, 0, 1], 4, gen),
    ])
    labels = ["inform"] * 6 + ["ask"] * 4 + ["bye"] * 4
    query = _near([0, 1, 0.1, 0], 1, gen, noise=0.0)
    return support, labels, query


def _tight_intents(n_per_intent: int = 6):
    gen = torch.Generator().manual_seed(1)
    directions = torch.eye(8)[:4].tolist()
    support = torch.cat([_near(d, n_per_intent, gen) for d in directions])
    labels = [name for name in "abcd" for _ in range(n_per_intent)]
    queries = F.normalize(torch.randn(7, 8, generator=gen), dim=-1)
    return support, labels, queries


def test_mixture_is_a_head_option():
    assert "mixture" in HEAD_TYPES
    assert isinstance(make_head("mixture", 0.1), MixtureHead)
    FewShotConfig(head="mixture").validate(check_encoder=False)


def test_a_two_group_intent_gets_two_components_and_its_small_group_is_recognised():
    support, labels, query = _two_group_intent()
    mixture = MixtureHead(0.1).fit(support, labels)
    prototype = PrototypeHead(0.1).fit(support, labels)
    assert mixture.n_components == {"ask": 1, "bye": 1, "inform": 2}
    # 2 beat 1 on the bot's own examples (leave-one-out); 3 ties 2, and ties go to the smaller
    counts = mixture.selection["inform"]
    assert counts[2] > counts[1] and counts[3] == counts[2]
    inform = mixture.labels.index("inform")
    assert int(prototype.predict_proba(query).argmax()) != inform
    assert int(mixture.predict_proba(query).argmax()) == inform
    # similarity to an intent: its nearest component
    assert float(mixture.similarities(query)[0, inform]) > 0.95
    # the plain means stay the prototypes (the in-scope features read them)
    assert torch.equal(mixture.prototypes, prototype.prototypes)


def test_class_probability_is_an_equal_weight_mixture_of_the_components():
    support, labels, query = _two_group_intent()
    head = MixtureHead(0.1).fit(support, labels)
    logits = []
    for c in range(len(head.labels)):
        mine = head.components[head.component_targets == c]
        logits.append(torch.log(torch.exp(query[0] @ mine.T / 0.1).mean()))
    expected = torch.softmax(torch.stack(logits), dim=0)
    assert torch.allclose(head.predict_proba(query)[0], expected, atol=1e-6)


def test_tight_intents_keep_one_component_and_the_prototype_probabilities():
    support, labels, queries = _tight_intents()
    names = {label: F.normalize(torch.ones(8) + torch.eye(8)[i], dim=0)
             for i, label in enumerate("abcd")}
    for extra, weight in ((None, 0.0), (names, 1.0)):
        mixture = MixtureHead(0.1).fit(support, labels, extra, weight)
        prototype = PrototypeHead(0.1).fit(support, labels, extra, weight)
        assert set(mixture.n_components.values()) == {1}
        assert set(mixture.selection) == set("abcd")  # k = 2 and 3 were tried, and lost or tied
        assert torch.allclose(mixture.predict_proba(queries), prototype.predict_proba(queries))
        assert torch.allclose(mixture.similarities(queries), prototype.similarities(queries))


def test_an_intent_under_four_examples_keeps_one_component():
    support, labels, _ = _two_group_intent()
    keep = [0, 4, 6, 7, 8, 9, 10, 11, 12, 13]  # "inform" cut to one e1 and one e2 example
    head = MixtureHead(0.1).fit(support[keep], [labels[i] for i in keep])
    assert head.n_components["inform"] == 1 and "inform" not in head.selection


def test_the_name_joins_the_component_nearest_to_it():
    support, labels, _ = _two_group_intent()
    e2 = torch.tensor([0.0, 1.0, 0.0, 0.0])
    plain = MixtureHead(0.1).fit(support, labels)
    named = MixtureHead(0.1).fit(support, labels, {"inform": e2}, 2.0)
    inform = plain.labels.index("inform")
    rows = (plain.component_targets == inform).nonzero().flatten()
    to_e2 = plain.components[rows] @ e2
    near, far = rows[to_e2.argmax()], rows[to_e2.argmin()]
    assert torch.allclose(named.components[far], plain.components[far])
    assert float(named.components[near] @ e2) > float(plain.components[near] @ e2)


def test_refine_with_one_component_everywhere_is_the_prototype_refine():
    support, labels, queries = _tight_intents()
    mixture = MixtureHead(0.1).fit(support, labels).refine(50, 0.05)
    prototype = PrototypeHead(0.1).fit(support, labels).refine(50, 0.05)
    assert set(mixture.n_components.values()) == {1}
    assert torch.allclose(mixture.component_weights, prototype.weights, atol=1e-5)
    assert torch.allclose(mixture.predict_proba(queries), prototype.predict_proba(queries),
                          atol=1e-5)
    # and it does change the head: the refined probabilities are not the unrefined ones
    assert not torch.allclose(mixture.predict_proba(queries),
                              MixtureHead(0.1).fit(support, labels).predict_proba(queries))


def test_refine_moves_the_components_of_a_two_group_intent():
    support, labels, _ = _two_group_intent()
    head = MixtureHead(0.1).fit(support, labels)
    before = head.predict_proba(support)
    head.refine(100, 0.05)
    assert head.component_weights.shape == head.components.shape == (4, 4)
    targets = head.support_targets
    assert (head.predict_proba(support).argmax(1) == targets).sum() >= (
        before.argmax(1) == targets).sum()


def test_the_choice_of_k_is_deterministic():
    support, labels, _ = _two_group_intent()
    torch.manual_seed(1)
    a = MixtureHead(0.1).fit(support, labels)
    torch.manual_seed(2)
    torch.rand(100)
    b = MixtureHead(0.1).fit(support, labels)
    assert a.selection == b.selection and a.n_components == b.n_components
    assert torch.equal(a.components, b.components)
    assert torch.equal(a.component_targets, b.component_targets)
    assert torch.equal(spherical_kmeans(support, 3), spherical_kmeans(support, 3))


def test_state_round_trip_keeps_components_and_refined_vectors():
    support, labels, query = _two_group_intent()
    head = MixtureHead(0.1).fit(support, labels, {"ask": torch.eye(4)[2]}, 1.0).refine(30)
    again = make_head("mixture", 0.1).load_state(head.labels, head.state_dict())
    assert torch.equal(again.components, head.components)
    assert torch.equal(again.component_weights, head.component_weights)
    assert torch.equal(again.predict_proba(support), head.predict_proba(support))
    assert torch.equal(again.similarities(query), head.similarities(query))
    broken = dict(head.state_dict(), components=head.components[:, :3])
    with pytest.raises(ValueError, match="components"):
        make_head("mixture", 0.1).load_state(head.labels, broken)
    plain = MixtureHead(0.1).fit(support, labels)  # no names: nothing else sized by intent
    with pytest.raises(ValueError, match="without a mixture component"):
        make_head("mixture", 0.1).load_state(plain.labels + ["zzz"], plain.state_dict())


def test_in_scope_reads_the_prototypes_of_a_mixture_head():
    support, labels, query = _two_group_intent()
    mixture = MixtureHead(0.1).fit(support, labels)
    prototype = PrototypeHead(0.1).fit(support, labels)
    assert torch.allclose(leave_one_out_similarities(mixture),
                          leave_one_out_similarities(prototype))
    served = in_scope_features(mixture, query, sims=mixture.similarities(query),
                               probs=mixture.predict_proba(query))
    assert torch.allclose(served, in_scope_features(prototype, query), atol=1e-6)


def test_a_saved_mixture_model_predicts_the_same(tiny_encoder_dir, tmp_path):
    support, labels, _ = _two_group_intent()
    texts = [f"example {i}" for i in range(len(labels))]
    config = FewShotConfig(encoder=str(tiny_encoder_dir), device="cpu", epochs=0,
                           head="mixture")
    model = FewShotIntentModel(config)
    # the examples' embeddings made by hand (two groups in "inform"), in the encoder's space;
    # messages at predict time go through the encoder as served
    embeddings = F.pad(support, (0, model.encoder.dim - support.shape[1]))
    model.fit_embeddings(embeddings, labels, texts)
    assert model.head.kind == "mixture" and model.head.n_components["inform"] == 2
    assert model.head.component_weights is not None  # refined (head_steps > 0)
    model.save(tmp_path)
    loaded = FewShotIntentModel.load(tmp_path)
    assert loaded.head.kind == "mixture"
    assert loaded.head.n_components == model.head.n_components
    probe = ["i want my money back", "hello", "lisbon", "next friday", "what is this"]
    for before, after in zip(model.predict(probe), loaded.predict(probe)):
        assert torch.equal(before, after)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["labels"] = meta["labels"] + ["zzz_extra"]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    from rasa_meta.runtime.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"head\.safetensors"):
        FewShotIntentModel.load(tmp_path)
