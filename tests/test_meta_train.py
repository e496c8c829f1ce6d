"""A few meta-training steps on a tiny random encoder: loss falls, checkpoint loads."""

from __future__ import annotations

import json

import pytest
import torch

from rasa_meta.runtime.encoder import SentenceEncoder, read_metadata
from rasa_meta.runtime.in_scope import SCORER_FILE
from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel
from rasa_meta.training.adapt import adapt
from rasa_meta.training.corpus import IntentCorpus
from rasa_meta.training.meta_train import MetaTrainingArguments, meta_train

WORDS = ["order", "refund", "card", "weather", "music", "alarm", "flight", "hotel"]


def word_corpus(name: str, offset: int = 0) -> IntentCorpus:
    """Each intent is one topic word in varied frames: easy to learn, hard for random weights."""
    frames = ["i have a question about my {}", "{} please", "help with {} now",
              "what about the {}", "tell me about {}", "{} is not working",
              "can you check my {}", "the {} again", "about {} today", "my {} issue"]
    texts, labels = [], []
    for word in WORDS:
        for frame in frames:
            texts.append(frame.format(word))
            labels.append(f"{name}_{word}")
    return IntentCorpus(name, texts, labels, {f"{name}_{w}": f"d{i % 2}" for i, w in
                                              enumerate(WORDS)})


@pytest.mark.parametrize("objective", ["prototypical", "contrastive"])
def test_meta_training_lowers_loss_and_writes_a_loadable_checkpoint(
    tiny_encoder_dir, tmp_path, objective
):
    args = MetaTrainingArguments(
        output_dir=str(tmp_path / "ckpt"), base_model=str(tiny_encoder_dir),
        objective=objective, episodes=40, n_way=4, k_shot=3, q_query=3,
        learning_rate=3e-3, eval_every=10, valid_episodes=4, patience=10,
        valid_fraction=0.25, seed=0, device="cpu",
        # the in-scope scorer trained after meta-training: once here, skipped elsewhere
        scorer_episodes=20 if objective == "prototypical" else 0,
    )
    result = meta_train(args, corpora=[word_corpus("a")])
    assert (result.output_dir / SCORER_FILE).is_file() == (objective == "prototypical")
    losses = [h["loss"] for h in result.history[1:]]
    assert losses[-1] < losses[0]
    meta = read_metadata(result.output_dir)
    assert meta["objective"] == objective and meta["seed"] == 0
    assert meta["base_model"] == str(tiny_encoder_dir) and meta["corpora"] == ["a"]
    assert 0.0 <= meta["meta_valid_accuracy"] <= 1.0 and meta["similarity_scale"] > 0
    assert json.loads((result.output_dir / "history.json").read_text())[0]["step"] == 0

    # the checkpoint is an encoder the classifier takes by path
    model = FewShotIntentModel(FewShotConfig(encoder=str(result.output_dir), device="cpu"))
    texts = ["refund please", "weather please", "hotel please"]
    adapt(model, texts, ["r", "w", "h"])
    assert model.temperature == pytest.approx(1 / meta["similarity_scale"])
    probs, _, _ = model.predict(texts)
    assert probs.shape == (3, 3)


def test_delta_checkpoint_holds_only_trained_layers(tiny_encoder_dir, tmp_path):
    args = MetaTrainingArguments(
        output_dir=str(tmp_path / "delta"), base_model=str(tiny_encoder_dir),
        episodes=3, n_way=3, k_shot=2, q_query=2, eval_every=3, valid_episodes=2,
        train_layers=1, save_delta=True, device="cpu", valid_fraction=0.4, scorer_episodes=0,
    )
    result = meta_train(args, corpora=[word_corpus("a")])
    from safetensors.torch import load_file

    delta = load_file(str(result.output_dir / "delta.safetensors"))
    assert delta and all(".layer.1." in name for name in delta)
    assert all(t.dtype == torch.float16 for t in delta.values())
    assert not (result.output_dir / "model.safetensors").exists()
    SentenceEncoder.from_pretrained(str(result.output_dir)).encode(["hello"])


def test_exclude_leaves_a_whole_dataset_family_out(tmp_path):
    from rasa_meta.training.meta_train import load_meta_corpora

    root = tmp_path / "data"
    for folder in ("BANKING77/train", "BANKING77-OOS/train", "CLINC150/train"):
        (root / folder).mkdir(parents=True)
        (root / folder / "seq.in").write_text("a\nb\n")
        (root / folder / "label").write_text("x\ny\n")
    args = MetaTrainingArguments(corpora=["BANKING77", "BANKING77-OOS", "CLINC150"],
                                 exclude=["BANKING77"], data_root=str(root))
    assert [c.name for c in load_meta_corpora(args)] == ["CLINC150"]
    with pytest.raises(ValueError, match="No corpus left"):
        load_meta_corpora(MetaTrainingArguments(corpora=["BANKING77"], exclude=["banking77"],
                                                data_root=str(root)))


def test_cli_flags_are_generated_from_the_arguments_dataclass():
    import argparse
    from dataclasses import fields

    from rasa_meta.tooling.cli import _add_meta_train

    parser = argparse.ArgumentParser()
    _add_meta_train(parser.add_subparsers())
    ns = parser.parse_args(["meta-train", "--output-dir", "x", "--n-way", "0",
                            "--uniformity-weight", "0.3", "--exclude", "SGD", "TOP",
                            "--no-mixed-precision"])
    args = MetaTrainingArguments(**{f.name: getattr(ns, f.name)
                                    for f in fields(MetaTrainingArguments)})
    assert args.n_way == 0 and args.uniformity_weight == 0.3 and args.exclude == ["SGD", "TOP"]
    assert args.mixed_precision is False and args.corpora == MetaTrainingArguments().corpora
    with pytest.raises(SystemExit):
        parser.parse_args(["meta-train", "--output-dir", "x", "--objective", "nope"])


def _write_split(folder, corpus: IntentCorpus) -> None:
    folder.mkdir(parents=True)
    (folder / "seq.in").write_text("\n".join(corpus.texts) + "\n")
    (folder / "label").write_text("\n".join(corpus.labels) + "\n")


def test_a_held_out_corpus_valid_split_picks_the_step_and_keep_last_keeps_the_end(
    tiny_encoder_dir, tmp_path
):
    root = tmp_path / "data"
    _write_split(root / "SGD" / "train", word_corpus("s"))
    _write_split(root / "SGD" / "valid", word_corpus("s"))
    common = dict(base_model=str(tiny_encoder_dir), n_way=4, k_shot=3, q_query=3,
                  learning_rate=3e-3, valid_episodes=2, valid_fraction=0.25, device="cpu",
                  data_root=str(root), scorer_episodes=0)
    with pytest.raises(ValueError, match="must be left out"):
        MetaTrainingArguments(output_dir=str(tmp_path / "x"), valid_corpus="SGD",
                              **common).validate()
    args = MetaTrainingArguments(output_dir=str(tmp_path / "a"), valid_corpus="SGD",
                                 exclude=["SGD"], valid_shots=3, episodes=6, eval_every=3,
                                 **common)
    result = meta_train(args, corpora=[word_corpus("a")])
    assert all(0 <= h["corpus_valid_accuracy"] <= 1 for h in result.history)
    best = max(h["corpus_valid_accuracy"] for h in result.history)
    assert result.best_valid_accuracy == best
    assert read_metadata(result.output_dir)["selected_on"] == "SGD/valid 3-shot"

    last = MetaTrainingArguments(output_dir=str(tmp_path / "b"), keep_last=True, patience=1,
                                 episodes=6, eval_every=2, **common)
    result = meta_train(last, corpora=[word_corpus("a")])
    assert result.best_step == 6 and result.steps == 6  # no early stop, the end is kept


def test_fomaml_run_scores_after_the_inner_loop_and_records_it(tiny_encoder_dir, tmp_path):
    args = MetaTrainingArguments(
        output_dir=str(tmp_path / "fomaml"), base_model=str(tiny_encoder_dir),
        meta_algorithm="fomaml", valid_after_inner_loop=True, episodes=4, n_way=3, k_shot=2,
        q_query=2, eval_every=2, valid_episodes=2, valid_fraction=0.4, learning_rate=3e-3,
        device="cpu", scorer_episodes=0, keep_last=True,
    )
    result = meta_train(args, corpora=[word_corpus("a")], command="rasa-meta meta-train x")
    assert [h["step"] for h in result.history] == [0, 2, 4]
    assert all(0 <= h["valid_adapted_accuracy"] <= 1 for h in result.history)
    meta = read_metadata(result.output_dir)
    assert meta["meta_algorithm"] == "fomaml" and meta["command"] == "rasa-meta meta-train x"
    assert meta["selected_on"] == "meta-valid, after the inner loop"
    assert meta["selection_accuracy"] == result.history[-1]["valid_adapted_accuracy"]
    assert meta["inner_loop"] == {"epochs": 1, "learning_rate": 1e-4, "train_layers": -1,
                                  "objective": "both", "seed": FewShotConfig().random_seed}
    with pytest.raises(ValueError, match="meta_algorithm"):
        MetaTrainingArguments(meta_algorithm="maml").validate()


def test_the_command_line_records_its_command_and_library_code_reads_no_argv(
    tmp_path, monkeypatch
):
    from pathlib import Path

    import rasa_meta.training
    from rasa_meta.tooling import cli
    from rasa_meta.training.meta_train import MetaTrainingResult

    seen = {}

    def fake_meta_train(args, corpora=None, command=None):
        seen.update(args=args, command=command)
        return MetaTrainingResult(Path(args.output_dir), 0.5, 0, 0, 0.0, [])

    monkeypatch.setattr("rasa_meta.training.meta_train.meta_train", fake_meta_train)
    argv = ["meta-train", "--output-dir", str(tmp_path / "o"), "--meta-algorithm", "reptile",
            "--inner-learning-rate", "2e-4", "--prompt", "a b"]
    assert cli.main(argv) == 0
    assert seen["command"] == f"rasa-meta meta-train --output-dir {tmp_path / 'o'} " \
        "--meta-algorithm reptile --inner-learning-rate 2e-4 --prompt 'a b'"
    assert seen["args"].meta_algorithm == "reptile" and seen["args"].inner_learning_rate == 2e-4
    for path in Path(rasa_meta.training.__file__).parent.glob("*.py"):
        assert "sys.argv" not in path.read_text(), path


def test_a_run_that_never_beats_its_start_keeps_the_weights_it_started_from(tiny_encoder_dir):
    from rasa_meta.training.meta_train import EarlyStopping, Process, make_learner

    args = MetaTrainingArguments(base_model=str(tiny_encoder_dir), device="cpu", episodes=10)
    training = make_learner(args, Process(torch.device("cpu")))
    start = {n: p.detach().clone() for n, p in training.encoder.model.named_parameters()}
    stopping = EarlyStopping(patience=1)
    assert stopping.update(training, 0, 0.9, last=False)
    with torch.no_grad():
        for p in training.encoder.model.parameters():
            p.add_(0.1)
    assert not stopping.update(training, 10, 0.5, last=True) and stopping.should_stop
    stopping.restore_best(training)
    assert stopping.best_step == 0
    for n, p in training.encoder.model.named_parameters():
        assert torch.equal(p, start[n]), n
