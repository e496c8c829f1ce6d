"""Tests do not leak torch's process-wide thread count into the tests after them (conftest)."""

from __future__ import annotations

import pytest
import torch

from rasa_meta import component


@pytest.fixture(scope="module")
def threads_before(torch_threads_at_start):
    if torch_threads_at_start < 2:
        pytest.skip("needs 2+ torch threads to tell a serving load's 1 thread apart")
    return torch_threads_at_start


def test_a_serving_load_lowers_the_threads(threads_before):
    component._use_serving_threads("auto")  # what MetaIntentClassifier.load does for serving
    assert torch.get_num_threads() == 1 and component._threads_before_serving == threads_before


def test_the_next_test_starts_with_the_session_s_threads(threads_before):
    assert torch.get_num_threads() == threads_before
    assert component._threads_before_serving is None
