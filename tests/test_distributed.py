"""Meta-training under DistributedDataParallel: two CPU processes (gloo), as torchrun runs it."""

from __future__ import annotations

import os
import socket

import pytest
import torch.multiprocessing as mp

from rasa_meta.runtime.encoder import read_metadata
from tests.test_meta_train import word_corpus


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, encoder: str, out: str, algorithm: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    from rasa_meta.training.meta_train import MetaTrainingArguments, meta_train

    args = MetaTrainingArguments(
        output_dir=out, base_model=encoder, episodes=6, n_way=3, k_shot=2, q_query=2,
        eval_every=3, valid_episodes=2, valid_fraction=0.4, learning_rate=1e-3,
        scorer_episodes=0, meta_algorithm=algorithm,
    )
    meta_train(args, corpora=[word_corpus("a")])


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["episodic", "fomaml"])
def test_two_process_ddp_meta_training_writes_one_checkpoint(
    tiny_encoder_dir, tmp_path, algorithm
):
    """The episodic loss through DistributedDataParallel; FOMAML's meta-gradients averaged
    by an all-reduce."""
    out = tmp_path / "ddp"
    mp.spawn(_worker, args=(2, _free_port(), str(tiny_encoder_dir), str(out), algorithm),
             nprocs=2)
    meta = read_metadata(out)
    assert meta["steps"] == 6 and meta["format"] == "full"
    assert meta["meta_algorithm"] == algorithm
