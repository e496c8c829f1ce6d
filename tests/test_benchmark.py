"""Metric helpers on hand-made inputs, benchmark reports on made-up rows, and a quick-mode run."""

from __future__ import annotations

import itertools
import json
import os
import random

import pytest

from rasa_meta.tooling import benchmark
from rasa_meta.tooling.evaluation import (
    accuracy,
    auroc,
    expected_calibration_error,
    macro_f1,
    percentile,
)
from rasa_meta.training.corpus import data_root
from tests.conftest import TOY_DATA

# --- metric helpers --------------------------------------------------------------------------


def test_accuracy_counts_exact_matches():
    assert accuracy(["a", "b", "c", "a"], ["a", "b", "a", "a"]) == pytest.approx(0.75)
    assert accuracy(["a", "b"], [None, "b"]) == pytest.approx(0.5)  # no prediction is wrong
    assert accuracy([], []) == 0.0


def test_accuracy_rejects_length_mismatch():
    with pytest.raises(ValueError):
        accuracy(["a", "b"], ["a"])


def test_macro_f1_by_hand():
    # a: tp=1 fp=0 fn=1 -> F1 2/3; b: tp=2 fp=1 fn=0 -> F1 4/5; mean 11/15.
    assert macro_f1(["a", "a", "b", "b"], ["a", "b", "b", "b"]) == pytest.approx(11 / 15)
    assert macro_f1(["a", "b", "c"], ["a", "b", "c"]) == pytest.approx(1.0)


def test_macro_f1_weights_classes_equally_and_ignores_predicted_only_classes():
    gold = ["big"] * 8 + ["small"] * 2
    pred = ["big"] * 8 + ["big", "other"]
    # big: tp=8 fp=1 fn=0 -> 16/17; small: tp=0 -> 0; "other" is not a gold class.
    assert macro_f1(gold, pred) == pytest.approx((16 / 17 + 0.0) / 2)
    assert macro_f1([], []) == 0.0


def test_percentile_interpolates_linearly():
    values = [4.0, 1.0, 3.0, 2.0]  # order must not matter
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 95) == pytest.approx(1 + 0.95 * 3)
    assert percentile(values, 0) == pytest.approx(1.0)
    assert percentile(values, 100) == pytest.approx(4.0)
    assert percentile([7.0], 95) == pytest.approx(7.0)
    with pytest.raises(ValueError):
        percentile([], 50)


def _pairwise_auroc(pos, neg):
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_by_hand_including_ties():
    assert auroc([0.9, 0.8], [0.1, 0.2]) == pytest.approx(1.0)
    assert auroc([0.1, 0.2], [0.9, 0.8]) == pytest.approx(0.0)
    assert auroc([0.5, 0.5], [0.5, 0.5, 0.5]) == pytest.approx(0.5)  # all tied
    # pairs (1,1) tie -> 0.5, (1,0), (2,1), (2,0) wins -> 3.5 / 4
    assert auroc([1, 2], [1, 0]) == pytest.approx(0.875)


def test_auroc_matches_pairwise_count_with_many_ties():
    rng = random.Random(0)
    for _ in range(20):
        pos = [rng.randint(0, 4) for _ in range(rng.randint(1, 12))]
        neg = [rng.randint(0, 4) for _ in range(rng.randint(1, 12))]
        assert auroc(pos, neg) == pytest.approx(_pairwise_auroc(pos, neg))


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError):
        auroc([], [0.1])
    with pytest.raises(ValueError):
        auroc([0.1], [])


def test_expected_calibration_error_by_hand():
    # bin (0.8, 0.9]: accuracy 0.5 vs confidence 0.9 -> 0.4, half the samples;
    # bin (0.5, 0.6]: accuracy 1.0 vs confidence 0.6 -> 0.4, half the samples.
    ece = expected_calibration_error([0.9, 0.9, 0.6, 0.6], [True, False, True, True])
    assert ece == pytest.approx(0.4)
    assert expected_calibration_error([1.0, 1.0], [True, True]) == pytest.approx(0.0)
    assert expected_calibration_error([0.0, 0.0], [False, False]) == pytest.approx(0.0)
    # 0.1 falls in the first bin (0, 0.1], 0.15 in the second.
    ece = expected_calibration_error([0.1, 0.15], [False, True])
    assert ece == pytest.approx(0.5 * 0.1 + 0.5 * 0.85)


def test_expected_calibration_error_perfectly_calibrated_bins():
    conf = [0.75] * 4 + [0.25] * 4
    correct = [True, True, True, False, True, False, False, False]
    assert expected_calibration_error(conf, correct) == pytest.approx(0.0)


# --- splits, configs and reports (no training) --------------------------------------------


def test_rasa_configs():
    plugin = benchmark.rasa_config(benchmark.PLUGIN, "minilm")
    assert "rasa_meta.MetaIntentClassifier" in plugin and 'encoder: "minilm"' in plugin
    assert "head" not in plugin
    assert "head: matching" in benchmark.rasa_config(benchmark.PLUGIN_MATCHING, "minilm")
    diet = benchmark.rasa_config(benchmark.DIET, "minilm")
    for part in ("WhitespaceTokenizer", "RegexFeaturizer", "LexicalSyntacticFeaturizer",
                 "analyzer: char_wb", "max_ngram: 4", "DIETClassifier", "epochs: 100"):
        assert part in diet
    with pytest.raises(ValueError):
        benchmark.rasa_config(benchmark.CENTROID, "minilm")


def _write_nlu(path, intents):
    lines = ["version: \"3.1\"", "nlu:"]
    for intent, examples in intents.items():
        lines += [f"- intent: {intent}", "  examples: |"] + [f"    - {e}" for e in examples]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_build_splits_from_rasa_nlu_yaml(tmp_path):
    train, test = tmp_path / "train.yml", tmp_path / "test.yml"
    _write_nlu(train, TOY_DATA)
    _write_nlu(test, {k: v[:2] for k, v in TOY_DATA.items()})
    splits = benchmark.build_splits([], ["5", "full"], seeds=[0, 1], nlu_train=train,
                                    nlu_test=test)
    assert [(s.dataset, s.shots, s.seed) for s in splits] == [
        ("train", "5", 0), ("train", "5", 1), ("train", "full", None)]
    for s in splits:
        assert len(s.test) == 8 and len(s.train.intents) == 4
    assert len(splits[0].train) == 20  # 5 shots of 4 intents (all the examples there are)
    with pytest.raises(ValueError):
        benchmark.build_splits([], ["5"], nlu_train=train)  # no test file


def test_build_splits_rejects_unknown_names():
    with pytest.raises(ValueError):
        benchmark.build_splits(["NOPE"], ["5"])
    if (data_root() / "CLINC150").is_dir():
        with pytest.raises(ValueError):
            benchmark.build_splits(["CLINC150"], ["3"])


@pytest.mark.skipif(not (data_root() / "CLINC150").is_dir(), reason="no corpora")
def test_build_splits_fixed_and_seeded():
    fixed = benchmark.build_splits(["CLINC150"], ["5", "10"], max_intents=10, max_test=50)
    assert [(s.shots, s.seed, s.train_split) for s in fixed] == [
        ("5", None, "train_5"), ("10", None, "train_10")]
    assert len(fixed[0].train) == 50 and len(fixed[1].train) == 100
    assert set(fixed[0].train.intents) == set(fixed[1].train.intents)
    assert len(fixed[0].test) == 50 and set(fixed[0].test.labels) <= set(fixed[0].train.intents)
    seeded = benchmark.build_splits(["CLINC150"], ["5"], seeds=[0, 1], max_intents=10)
    assert [s.seed for s in seeded] == [0, 1]
    assert seeded[0].train.texts != seeded[1].train.texts
    assert seeded[0].test.texts == seeded[1].test.texts  # identical test set across seeds


def _row(method, acc, train_s, p50, **extra):
    row = {"dataset": "toy", "shots": "5", "seed": None, "train_split": "train_5",
           "method": method, "n_intents": 2, "n_train": 10, "n_test": 4, "accuracy": acc,
           "macro_f1": acc, "train_s": train_s, "load_s": None, "p50_ms": p50,
           "p95_ms": p50 and p50 * 2, "latency_messages": 4, "batch_msgs_per_s": 100.0,
           "peak_rss_mb": 900.0, "error": None}
    row.update(extra)
    return row


_RUN = {"command": "rasa-meta benchmark", "started": "now", "cpu": "cpu", "cpu_count": 2,
        "memory_gb": 1, "device": "cpu", "rasa": "3.6", "tensorflow": "2", "torch": "2",
        "transformers": "5", "encoder": "minilm", "wall_s": 1.0, "warmup_messages": 10,
        "throughput_mode": "mode."}


def test_ratios_markdown_and_plots(tmp_path):
    rows = [
        _row(benchmark.BARE_FORWARD, None, None, 5.0, shots=None, train_split=None),
        _row(benchmark.PLUGIN, 0.9, 4.0, 6.0, paired_parse_p50_ms=6.0,
             paired_forward_p50_ms=5.0),
        _row(benchmark.PLUGIN_MATCHING, 0.85, 4.0, 6.0),
        _row(benchmark.DIET, 0.7, 40.0, 12.0),
        _row(benchmark.CENTROID, 0.8, 2.0, 4.0),
        _row(benchmark.LOGREG, None, None, None, error="RuntimeError: boom"),
    ]
    benchmark.add_ratios(rows)
    plugin, matching, diet = rows[1], rows[2], rows[3]
    assert plugin["train_vs_diet"] == pytest.approx(0.1)
    assert plugin["p50_vs_diet"] == pytest.approx(0.5)
    assert plugin["p50_vs_bare_forward"] == pytest.approx(1.2)
    assert plugin["paired_parse_vs_forward"] == pytest.approx(1.2)
    assert diet["train_vs_diet"] == pytest.approx(1.0)
    assert matching["paired_parse_vs_forward"] is None  # not measured
    assert rows[5]["train_vs_diet"] is None
    text = benchmark.to_markdown({"run": _RUN, "rows": rows})
    for method in benchmark.METHODS:
        assert f"| {method} |" in text
    assert "failed: RuntimeError: boom" in text
    assert "| 90.0 |" in text  # accuracy in percent
    paths = benchmark.write_plots(rows, tmp_path)
    assert [p.name for p in paths] == ["accuracy_vs_shots.png", "accuracy_vs_train_seconds.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_default_encoder_fails_fast(tmp_path, monkeypatch):
    import rasa_meta.runtime.encoder as encoder

    monkeypatch.setattr(encoder, "SHIPPED_ENCODER_DIR", tmp_path / "missing")
    with pytest.raises(ValueError, match="--encoder"):
        benchmark.run_benchmark(encoder="default", output_dir=tmp_path / "out", quick=True)


def test_cli_registers_benchmark():
    from rasa_meta.tooling.cli import COMMANDS, build_parser

    assert "benchmark" in COMMANDS
    ns = build_parser().parse_args(
        ["benchmark", "--quick", "--encoder", "minilm", "--shots", "5", "full", "--seeds", "0",
         "1", "--methods", "diet", "rasa_meta[matching]"])
    assert ns.quick and ns.encoder == ["minilm"] and ns.shots == ["5", "full"]
    assert ns.seeds == [0, 1] and ns.methods == ["diet", "rasa_meta[matching]"]
    ns = build_parser().parse_args(["benchmark"])
    assert ns.encoder is None and ns.diet_max_train is None
    ns = build_parser().parse_args(
        ["benchmark", "--encoder", "BANKING77=runs/a", "--encoder", "CLINC150=runs/b",
         "--diet-max-train", "2000"])
    assert ns.encoder == ["BANKING77=runs/a", "CLINC150=runs/b"] and ns.diet_max_train == 2000


def test_parse_encoder_specs():
    parse = benchmark.parse_encoder_specs
    assert parse(None) == {"*": "default"}
    assert parse(["minilm"]) == {"*": "minilm"}
    specs = parse(["BANKING77=runs/no-banking", "CLINC150=runs/no-clinc", "minilm"])
    assert specs == {"BANKING77": "runs/no-banking", "CLINC150": "runs/no-clinc", "*": "minilm"}
    assert benchmark.encoder_for(specs, "CLINC150") == "runs/no-clinc"
    assert benchmark.encoder_for(specs, "my_bot") == "minilm"
    assert benchmark.encoder_for("x", "BANKING77") == "x"
    # a path holding "=" is an encoder, not a DATASET=ENCODER pair
    assert parse(["runs/lr=3e-5"]) == {"*": "runs/lr=3e-5"}


def test_each_dataset_encoder_is_checked_before_anything_runs(tmp_path):
    from rasa_meta.runtime.encoder import EncoderNotFoundError

    with pytest.raises(EncoderNotFoundError):
        benchmark.run_benchmark(encoder={"CLINC150": str(tmp_path / "missing"), "*": "minilm"},
                                quick=True, methods=[benchmark.PLUGIN],
                                output_dir=tmp_path / "out")
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.skipif(not (data_root() / "CLINC150").is_dir(), reason="no corpora")
def test_diet_above_max_train_is_skipped_not_run(tmp_path):
    out = tmp_path / "out"
    result = benchmark.run_benchmark(quick=True, methods=[benchmark.DIET], diet_max_train=10,
                                     output_dir=out)
    (row,) = result["rows"]
    assert row["method"] == benchmark.DIET and row["n_train"] == 50
    assert row["skipped"].startswith("not run: 50 training examples > --diet-max-train 10")
    assert row["accuracy"] is None and row["error"] is None and row["log"] is None
    assert row["estimated_train_s"] is None  # no DIET row measured in this run
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert data["run"]["complete"] is True and data["run"]["diet_max_train"] == 10
    assert "| diet | not run: 50 training examples" in (out / "results.md").read_text("utf-8")


def test_skipped_diet_estimate_scales_with_training_examples():
    rows = [
        _row(benchmark.DIET, 0.5, 100.0, 10.0, n_train=500, shots="5"),
        _row(benchmark.DIET, 0.6, 200.0, 10.0, n_train=1000, shots="10"),
        _row(benchmark.DIET, None, None, None, n_train=10000, shots="full",
             skipped="not run: 10000 training examples > --diet-max-train 2000"),
        _row(benchmark.PLUGIN, 0.9, 5.0, 6.0, n_train=10000, shots="full"),
    ]
    benchmark.finish_rows(rows)
    assert rows[2]["estimated_train_s"] == pytest.approx(2000.0)
    assert rows[2]["train_vs_diet"] is None and rows[3]["train_vs_diet"] is None
    text = benchmark.to_markdown({"run": _RUN, "rows": rows})
    assert "est. train ≈ 33 min" in text


# --- end to end --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not (data_root() / "CLINC150").is_dir(), reason="no corpora")
def test_quick_benchmark_end_to_end(tmp_path):
    out = tmp_path / "bench"
    # a per-dataset encoder; the "*" fallback is never used, so it need not exist
    # every method in this process (Rasa and TensorFlow imported once); the child processes
    # are tested on their own below
    result = benchmark.run_benchmark(quick=True, output_dir=out, latency_messages=20,
                                     warmup_messages=2, in_process=True,
                                     encoder={"CLINC150": "minilm", "*": "missing/encoder"})

    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert data["rows"] == json.loads(json.dumps(result["rows"]))
    for key in ("machine", "cpu", "torch", "rasa", "device", "command", "throughput_mode"):
        assert data["run"][key]
    methods = [r["method"] for r in data["rows"]]
    assert sorted(methods) == sorted(list(benchmark.METHODS) + [benchmark.BARE_FORWARD])
    for row in data["rows"]:
        assert row["error"] is None, row
        assert row["p50_ms"] > 0 and row["p95_ms"] >= row["p50_ms"]
        assert row["latency_messages"] == 20
        assert row["peak_rss_mb"] > 0
        if row["method"] == benchmark.BARE_FORWARD:
            continue
        assert row["dataset"] == "CLINC150" and row["shots"] == "5"
        assert row["n_intents"] == 10 and row["n_train"] == 50 and row["n_test"] == 100
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["macro_f1"] <= 1.0
        assert row["train_s"] > 0 and row["batch_msgs_per_s"] > 0
        assert row["train_vs_diet"] is not None and row["p50_vs_diet"] is not None
        if row["method"] in benchmark.RASA_METHODS:
            assert row["parse_agreement"] is not None and row["model_mb"] > 0
        if row["method"] in (benchmark.PLUGIN, benchmark.PLUGIN_MATCHING):
            assert row["encoder"] == "minilm"
            assert row["p50_vs_bare_forward"] is not None
            assert row["paired_parse_vs_forward"] is not None
    # the frozen base encoder is an easy win on 10 CLINC150 intents
    centroid = next(r for r in data["rows"] if r["method"] == benchmark.CENTROID)
    assert centroid["accuracy"] > 0.5

    text = (out / "results.md").read_text(encoding="utf-8")
    assert text.startswith("# rasa-meta benchmark")
    for method in list(benchmark.METHODS) + [benchmark.BARE_FORWARD]:
        assert f"| {method} |" in text
    for name in ("accuracy_vs_shots.png", "accuracy_vs_train_seconds.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_each_job_runs_in_its_own_process_which_reports_result_or_error(tmp_path, monkeypatch):
    from rasa_meta.tooling.benchmark import isolation

    (tmp_path / "ok").mkdir()
    (tmp_path / "bad").mkdir()
    log = tmp_path / "child.log"
    # a method no runner knows: the child reports the error, the benchmark goes on
    bad = isolation.run_isolated({"method": "nope"}, tmp_path / "bad", log, isolate=True)
    assert bad["error"] == "KeyError: 'nope'" and "Traceback" in log.read_text()
    # the parent's environment is left alone (the child points Rasa's cache at its folder)
    monkeypatch.delenv("RASA_CACHE_DIRECTORY", raising=False)
    ok = isolation.run_isolated({"method": benchmark.BARE_FORWARD, "encoder": "minilm",
                                 "latency_texts": ["hello", "where is my order"], "warmup": 1},
                                tmp_path / "ok", None, isolate=True)
    assert ok.get("error") is None and len(ok["latencies"]) == 2 and ok["peak_rss_mb"] > 0
    assert "RASA_CACHE_DIRECTORY" not in os.environ
