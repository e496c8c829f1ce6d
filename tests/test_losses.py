"""Objectives on hand-computed toy tensors, and their gradients."""

from __future__ import annotations

import math

import pytest
import torch

from rasa_meta.training.losses import episode_loss, prototypical_loss, supervised_contrastive_loss


def test_prototypical_loss_matches_hand_computation():
    support = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    s_t = torch.tensor([0, 1])
    query = torch.tensor([[1.0, 0.0]])
    q_t = torch.tensor([0])
    scale = torch.tensor(2.0)
    # logits = 2 * [1, 0]; loss = -log(e^2 / (e^2 + e^0))
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert abs(prototypical_loss(support, s_t, query, q_t, scale).item() - expected) < 1e-6


def test_prototypical_gradient_pulls_query_toward_its_prototype():
    support = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    query = torch.tensor([[0.6, 0.8]], requires_grad=True)
    scale = torch.tensor(5.0, requires_grad=True)
    loss = prototypical_loss(support, torch.tensor([0, 1]), query, torch.tensor([0]), scale)
    loss.backward()
    # descending moves the query toward class 0 (+x) and away from class 1 (+y)
    assert query.grad[0, 0] < 0 < query.grad[0, 1]
    # the query is closer to the wrong class, so a larger scale raises the loss
    assert scale.grad > 0
    assert torch.autograd.gradcheck(
        lambda q: prototypical_loss(support.double(), torch.tensor([0, 1]), q,
                                    torch.tensor([0]), torch.tensor(5.0, dtype=torch.double)),
        (query.detach().double().requires_grad_(),),
    )


def test_supcon_matches_hand_computation():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([0, 0, 1])
    tau = 1.0
    # anchor 0: positive 1 (sim 1), negative 2 (sim 0): -log(e/(e+1)); same for anchor 1;
    # anchor 2 has no positive and is skipped.
    expected = -math.log(math.e / (math.e + 1))
    assert abs(supervised_contrastive_loss(emb, t, tau).item() - expected) < 1e-6


def test_supcon_without_positives_is_zero_with_gradient():
    emb = torch.eye(3, requires_grad=True)
    loss = supervised_contrastive_loss(emb, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0.0 and emb.grad is not None


def test_supcon_gradient_separates_classes():
    emb = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]], requires_grad=True)
    t = torch.tensor([0, 0, 1])
    supervised_contrastive_loss(emb, t, 0.5).backward()
    stepped = (emb - 0.1 * emb.grad).detach()
    stepped = torch.nn.functional.normalize(stepped, dim=1)
    before = emb[0].detach() @ emb[2].detach()
    after = stepped[0] @ stepped[2]
    assert after < before  # the negative pair moved apart


@pytest.mark.parametrize("objective", ["prototypical", "contrastive", "both"])
def test_episode_loss_objectives(objective):
    torch.manual_seed(0)
    s = torch.nn.functional.normalize(torch.randn(6, 4), dim=1).requires_grad_()
    q = torch.nn.functional.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    loss = episode_loss(objective, s, torch.tensor([0, 0, 1, 1, 2, 2]), q,
                        torch.tensor([0, 1, 2]), torch.tensor(10.0))
    loss.backward()
    assert loss.item() > 0 and s.grad.abs().sum() > 0


def test_unknown_objective_is_rejected():
    with pytest.raises(ValueError, match="objective"):
        episode_loss("triplet", torch.zeros(1, 2), torch.tensor([0]), torch.zeros(1, 2),
                     torch.tensor([0]), torch.tensor(1.0))


def test_uniformity_matches_hand_computation_and_prefers_spread():
    from rasa_meta.training.losses import uniformity_loss

    # two orthogonal unit vectors: ||x - y||^2 = 2, both ordered pairs -> log(exp(-2 * 2))
    pair = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert uniformity_loss(pair).item() == pytest.approx(-4.0)
    # antipodal: distance^2 = 4 -> -8; a collapsed pair: 0
    assert uniformity_loss(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])).item() == pytest.approx(-8.0)
    assert uniformity_loss(torch.tensor([[1.0, 0.0], [1.0, 0.0]])).item() == pytest.approx(0.0)
    # it enters episode_loss with its weight
    s, t = pair, torch.tensor([0, 1])
    base = episode_loss("prototypical", s, t, s, t, torch.tensor(1.0))
    reg = episode_loss("prototypical", s, t, s, t, torch.tensor(1.0), uniformity_weight=0.5)
    assert (reg - base).item() == pytest.approx(0.5 * uniformity_loss(torch.cat([s, s])).item())
    # descending it pushes a narrow cone apart
    x = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1]]), dim=-1)
    x.requires_grad_(True)
    uniformity_loss(x).backward()
    # a descent step (x - lr * grad) moves the first up and the second down: apart
    assert x.grad[0, 1] < 0 and x.grad[1, 1] > 0
