"""FOMAML / Reptile / ProtoMAML meta-gradients on a tiny encoder, against hand computation,
and a few outer steps lowering the post-adaptation query loss."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from rasa_meta.runtime.encoder import SentenceEncoder, transformer_layers
from rasa_meta.training.episodes import Episode, EpisodeSampler
from rasa_meta.training.inner_loop import bot_episodes
from rasa_meta.training.learner import MAX_GRAD_NORM, WEIGHT_DECAY, MetaLearner
from rasa_meta.training.losses import episode_loss, prototypical_loss
from rasa_meta.training.meta_algorithms import (
    FastWeights,
    InnerLoop,
    OuterLoss,
    fomaml_gradient,
    refined_head_loss,
    reptile_gradient,
)
from rasa_meta.training.meta_train import MetaTrainingArguments, Process, make_learner, make_step
from tests.test_meta_train import word_corpus

INNER_LR = 1e-3  # larger than the component's 1e-4 so that θ' visibly differs from θ
SEED = 3


@pytest.fixture(scope="module")
def still_encoder_dir(tmp_path_factory):
    """A tiny random BERT without dropout: the hand computation is deterministic."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rasa_meta.runtime.encoder import bundled_base_dir

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("still-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(bundled_base_dir()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def _episode() -> Episode[str]:
    support = ["refund please", "i want a refund", "refund my order", "money back please",
               "weather today", "is it raining", "weather tomorrow", "will it be sunny"]
    query = ["refund now", "give me my money back", "rain later", "sunny weather"]
    return Episode(["refund", "weather"], support, torch.tensor([0] * 4 + [1] * 4), query,
                   torch.tensor([0, 0, 1, 1]))


def _embed(encoder, texts):
    return F.normalize(encoder.pool(encoder.tokenize(texts)).float(), dim=-1)


def _hand_adapted(encoder_dir, episode, scale):
    """θ' by hand: the inner loop's one episode (the component's 16-way halves of the
    support), its loss ('both'), the gradient clipped to norm 1, one AdamW step from zero
    moments: p(1 - lr wd) - lr g / (|g| + eps)."""
    ref = SentenceEncoder.from_pretrained(str(encoder_dir))
    blocks = [p for layer in transformer_layers(ref.model) for p in layer.parameters()]
    for p in ref.model.parameters():
        p.requires_grad_(False)
    for p in blocks:
        p.requires_grad_(True)
    (inner_ep,) = bot_episodes(episode.support_labels, random.Random(SEED))
    texts = [episode.support[i] for i in inner_ep.support + inner_ep.query]
    emb = _embed(ref, texts)
    n_s = len(inner_ep.support)
    loss = episode_loss("both", emb[:n_s], inner_ep.support_targets, emb[n_s:],
                        inner_ep.query_targets, torch.tensor(scale))
    grads = torch.autograd.grad(loss, blocks)
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    clip = min(1.0, MAX_GRAD_NORM / (float(norm) + 1e-6))
    with torch.no_grad():
        for p, g in zip(blocks, grads):
            g = g * clip
            p.mul_(1 - INNER_LR * WEIGHT_DECAY).sub_(INNER_LR * g / (g.abs() + 1e-8))
    return ref


def _learner(encoder_dir, top_layers=1):
    from rasa_meta.runtime.encoder import set_trainable_layers

    encoder = SentenceEncoder.from_pretrained(str(encoder_dir))
    set_trainable_layers(encoder.model, top_layers)
    return MetaLearner(encoder, 10.0)


def test_fomaml_gradient_is_the_query_gradient_at_the_adapted_weights(still_encoder_dir):
    episode = _episode()
    learner = _learner(still_encoder_dir)
    before = {n: p.detach().clone() for n, p in learner.encoder.model.named_parameters()}
    inner = InnerLoop(epochs=1, learning_rate=INNER_LR, train_layers=-1, objective="both")
    value = fomaml_gradient(learner, learner, episode, OuterLoss("prototypical"), inner,
                            trainable_layers=1, seed=SEED)

    # by hand: the prototypical query loss at θ', differentiated there
    ref = _hand_adapted(still_encoder_dir, episode, 10.0)
    top = list(transformer_layers(ref.model)[-1].parameters())
    for p in top:
        p.requires_grad_(True)
    log_scale = learner.log_scale.detach().clone().requires_grad_(True)
    emb = _embed(ref, episode.support + episode.query)
    loss = prototypical_loss(emb[:8], episode.support_targets, emb[8:], episode.query_targets,
                             log_scale.exp())
    expected = torch.autograd.grad(loss, top + [log_scale])

    assert value == pytest.approx(loss.item(), rel=1e-5)
    got = [p.grad for p in transformer_layers(learner.encoder.model)[-1].parameters()]
    for g, e in zip(got + [learner.log_scale.grad], expected):
        assert torch.allclose(g, e, rtol=1e-4, atol=1e-6)
    # only the outer-trained block has a gradient, and the slow weights are θ again
    assert all(p.grad is None for p in transformer_layers(learner.encoder.model)[0].parameters())
    for n, p in learner.encoder.model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_reptile_gradient_is_the_step_the_inner_loop_took(still_encoder_dir):
    episode = _episode()
    learner = _learner(still_encoder_dir)
    inner = InnerLoop(epochs=1, learning_rate=INNER_LR, train_layers=-1, objective="both")
    reptile_gradient(learner, learner, episode, OuterLoss("prototypical"), inner,
                     trainable_layers=1, seed=SEED)
    ref = _hand_adapted(still_encoder_dir, episode, 10.0)
    slow = SentenceEncoder.from_pretrained(str(still_encoder_dir))
    pairs = zip(transformer_layers(learner.encoder.model)[-1].parameters(),
                transformer_layers(slow.model)[-1].parameters(),
                transformer_layers(ref.model)[-1].parameters())
    largest = 0.0
    for p, theta, adapted in pairs:
        assert torch.allclose(p.grad, theta - adapted, rtol=1e-4, atol=1e-9)
        largest = max(largest, float(p.grad.abs().max()))
    assert largest > 0.5 * INNER_LR  # a real step (Adam's first is about lr), not rounding
    assert learner.log_scale.grad is None  # the inner loop does not move the scale


def test_refined_head_loss_is_the_prototypical_loss_before_refinement():
    torch.manual_seed(0)
    s = F.normalize(torch.randn(6, 5), dim=-1).requires_grad_()
    q = F.normalize(torch.randn(4, 5), dim=-1)
    s_t, q_t = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 2, 2])
    labels = ["c", "c", "a", "a", "b", "b"]  # the head orders classes by name, targets do not
    scale = torch.tensor(8.0)
    plain = prototypical_loss(s, s_t, q, q_t, scale)
    assert refined_head_loss(s, s_t, q, q_t, scale, labels, 0, 0.01).item() == pytest.approx(
        plain.item(), rel=1e-6)
    refined = refined_head_loss(s, s_t, s.detach(), s_t, scale, labels, 50, 0.05)
    assert refined.item() < prototypical_loss(s, s_t, s.detach(), s_t, scale).item()
    refined.backward()  # the prototypes carry the gradient to the support embeddings
    assert s.grad is not None and float(s.grad.abs().sum()) > 0


def _post_adaptation_loss(training, episodes, inner):
    loss = OuterLoss("prototypical")
    values = []
    for ep in episodes:
        fast = FastWeights(training.encoder.model)
        inner.adapt(training.encoder, ep.support, ep.support_labels, training.scale, SEED)
        with torch.no_grad():
            values.append(loss(training.learner, training.encoder, ep).item())
        fast.restore()
    return sum(values) / len(values)


@pytest.mark.parametrize("algorithm", ["fomaml", "reptile", "protomaml"])
def test_outer_steps_lower_the_post_adaptation_query_loss(still_encoder_dir, algorithm):
    from rasa_meta.runtime.encoder import set_trainable_layers

    args = MetaTrainingArguments(
        base_model=str(still_encoder_dir), meta_algorithm=algorithm, episodes=12,
        learning_rate=3e-3, n_way=4, k_shot=3, q_query=3, device="cpu", seed=0,
    )
    process = Process(torch.device("cpu"))
    training = make_learner(args, process)
    step = make_step(args, process)
    corpora = [word_corpus("a")]
    held = EpisodeSampler(corpora, 4, 3, 3, seed=99).take(4)
    inner = args.inner_loop()
    before = _post_adaptation_loss(training, held, inner)
    set_trainable_layers(training.encoder.model, args.train_layers)
    sampler = EpisodeSampler(corpora, 4, 3, 3, seed=0)
    for i in range(1, args.episodes + 1):
        step(training, sampler.sample(), i)
    after = _post_adaptation_loss(training, held, inner)
    assert after < 0.9 * before, (before, after)


def _hand_named_loss(encoder, episode, names, weight):
    """The prototypical query loss with each named class's embedded name in its prototype."""
    from rasa_meta.runtime.heads import class_means

    n_s = len(episode.support)
    texts = list(episode.support) + list(episode.query) + [names[i] for i in sorted(names)]
    emb = _embed(encoder, texts)
    extra = torch.zeros(episode.n_way, emb.shape[1])
    for row, i in enumerate(sorted(names)):
        extra[i] = emb[n_s + len(episode.query) + row]
    protos = class_means(emb[:n_s], episode.support_targets, episode.n_way, extra, weight)
    logits = 20.0 * emb[n_s:n_s + len(episode.query)] @ protos.T
    return F.cross_entropy(logits, episode.query_targets)


@pytest.mark.parametrize("classes, names", [
    (["refund", "weather"], {0: "refund", 1: "weather"}),
    (["intent_1", "Weather"], {1: "weather"}),  # no words: no name, the other one lower-cased
])
def test_episode_names_join_the_prototypes_of_the_outer_loss(still_encoder_dir, classes, names):
    from rasa_meta.training.meta_algorithms import episode_name_texts

    encoder = SentenceEncoder.from_pretrained(str(still_encoder_dir))
    learner = MetaLearner(encoder, 20.0)
    base = _episode()
    episode = Episode(classes, base.support, base.support_targets, base.query,
                      base.query_targets)
    assert episode_name_texts(episode) == names
    with torch.no_grad():
        named = OuterLoss("prototypical", label_name_weight=2.0)(learner, encoder, episode)
        plain = OuterLoss("prototypical")(learner, encoder, episode)
        hand = _hand_named_loss(encoder, episode, names, 2.0)
    assert named.item() == pytest.approx(hand.item(), rel=1e-4)
    assert abs(named.item() - plain.item()) > 1e-4


def _name_margin(encoder, corpus) -> float:
    """Mean over intents of cos(name, own prototype) - max cos(name, other prototypes)."""
    from rasa_meta.runtime.heads import class_means, label_index
    from rasa_meta.runtime.label_text import name_text

    labels, targets = label_index(corpus.labels)
    with torch.no_grad():
        protos = class_means(encoder.encode(corpus.texts), targets, len(labels))
        names = encoder.encode([name_text(label) for label in labels])
    sims = names @ protos.T
    own = sims.diagonal()
    others = sims.masked_fill(torch.eye(len(labels), dtype=torch.bool), -2.0).max(1).values
    return float((own - others).mean())


def test_meta_training_with_names_places_names_nearer_their_examples(still_encoder_dir):
    corpora = [word_corpus("a")]
    margins = {}
    for weight in (0.0, 1.0):
        args = MetaTrainingArguments(
            base_model=str(still_encoder_dir), episodes=15, learning_rate=3e-3, n_way=4,
            k_shot=3, q_query=3, device="cpu", seed=0, label_name_weight=weight,
        )
        process = Process(torch.device("cpu"))
        training = make_learner(args, process)
        step = make_step(args, process)
        sampler = EpisodeSampler(corpora, 4, 3, 3, seed=0)
        for i in range(1, args.episodes + 1):
            step(training, sampler.sample(), i)
        margins[weight] = _name_margin(training.encoder, corpora[0])
    assert margins[1.0] > margins[0.0] + 0.02, margins  # 0.22 -> 0.28 here
