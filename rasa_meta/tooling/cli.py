"""The ``rasa-meta`` command line: meta-train, evaluate, benchmark, check-data, inbox,
calibrate."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import typing
from dataclasses import fields
from typing import Dict, List, Optional, Sequence

from rasa_meta.runtime.model import FewShotConfig
from rasa_meta.training.meta_train import MetaTrainingArguments


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls: type, required: Sequence[str] = ()
) -> None:
    """One ``--flag`` per dataclass field, typed and documented from the field itself, so the
    command line cannot drift from the arguments it fills.

    The field's metadata (see :func:`rasa_meta.training.arguments.arg`) gives its help and may
    give ``choices``, ``flag``, ``nargs``, ``metavar``, ``action`` or ``cli=False``.
    """
    defaults = cls()
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        kind, is_list = _scalar_type(hints.get(f.name, str))
        kwargs: Dict = {"help": meta.get("help", ""), "dest": f.name}
        for key in ("nargs", "metavar", "action"):
            if key in meta:
                kwargs[key] = meta[key]
        if "choices" in meta:
            kwargs["choices"] = list(meta["choices"])
        if f.name in required:
            kwargs["required"] = True
        elif kind is bool and not is_list:
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["default"] = default
        else:  # a repeated flag collects its values: it starts empty
            kwargs["default"] = None if kwargs.get("action") == "append" else default
        if is_list and "nargs" not in kwargs and kwargs.get("action") != "append":
            kwargs["nargs"] = "*"
        if kind is not bool:
            kwargs["type"] = kind
        parser.add_argument(flag, **kwargs)


def dataclass_values(cls: type, ns: argparse.Namespace) -> Dict:
    """The values of ``cls``'s fields that the command line set (see add_dataclass_arguments)."""
    return {f.name: getattr(ns, f.name) for f in fields(cls) if f.metadata.get("cli", True)}


def _scalar_type(hint) -> tuple:
    """(int/float/str/bool, whether a list) from a field's type: Optional and List unwrapped;
    anything else (e.g. a Union of str and a mapping) is read as text."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is typing.Union and len(args) == 1:
        return _scalar_type(args[0])
    if origin in (list, List) and args:
        return _scalar_type(args[0])[0], True
    return (hint if hint in (int, float, str, bool) else str), False


def _add_meta_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "meta-train",
        help="Meta-train an encoder on N-way K-shot episodes and write a checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_dataclass_arguments(p, MetaTrainingArguments, required=("output_dir",))


def _run_meta_train(ns: argparse.Namespace) -> int:
    from rasa_meta.training.meta_train import meta_train

    values = {f.name: getattr(ns, f.name) for f in fields(MetaTrainingArguments)}
    # the checkpoint records the command that made it: this command line
    result = meta_train(MetaTrainingArguments(**values), command=getattr(ns, "command_line", None))
    print(
        json.dumps(
            {
                "output_dir": str(result.output_dir),
                "meta_valid_accuracy": round(result.best_valid_accuracy, 4),
                "best_step": result.best_step,
                "steps": result.steps,
                "seconds": round(result.seconds, 1),
            }
        )
    )
    return 0


def _add_train_scorer(sub: argparse._SubParsersAction) -> None:
    from rasa_meta.training.in_scope import ScorerTrainingArguments

    p = sub.add_parser(
        "train-scorer",
        help="Meta-train the in-scope scorer of an encoder (pseudo out-of-scope episodes).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_dataclass_arguments(p, ScorerTrainingArguments)


def _run_train_scorer(ns: argparse.Namespace) -> int:
    from rasa_meta.training.in_scope import ScorerTrainingArguments, run_scorer_training

    values = {f.name: getattr(ns, f.name) for f in fields(ScorerTrainingArguments)}
    print(json.dumps(run_scorer_training(ScorerTrainingArguments(**values)), indent=1))
    return 0


def _add_threshold(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "threshold",
        help="Choose the FallbackClassifier threshold: parse in-scope and out-of-scope test "
             "messages with a trained model, plot the trade-off, print the threshold.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="A trained Rasa model (models/....tar.gz).")
    p.add_argument("--in-scope", required=True,
                   help="Rasa NLU YAML of in-scope test messages with their intents.")
    p.add_argument("--out-of-scope", required=True,
                   help="Out-of-scope messages: Rasa NLU YAML or a text file, one per line.")
    p.add_argument("--max-in-scope-drop", type=float, default=0.03,
                   help="In-scope accuracy the fallback may cost (0.03: 3 points); "
                        "a negative value picks the best mean of accuracy and recall.")
    p.add_argument("--output-dir", default="results/threshold")


def _run_threshold(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from rasa_meta.tooling.threshold import run

    drop = None if ns.max_in_scope_drop < 0 else ns.max_in_scope_drop
    try:
        report = run(ns.model, Path(ns.in_scope), Path(ns.out_of_scope), Path(ns.output_dir),
                     drop)
    except (OSError, ValueError) as e:
        print(f"rasa-meta threshold: {e}", file=sys.stderr)
        return 2
    none, chosen = report["no_fallback"], report["chosen"]
    print(f"no fallback:      in-scope accuracy {100 * none['in_scope_accuracy']:.1f} %, "
          f"OOS recall {100 * none['oos_recall']:.1f} %")
    print(f"threshold {chosen['threshold']:.2f}:  in-scope accuracy "
          f"{100 * chosen['in_scope_accuracy']:.1f} %, "
          f"OOS recall {100 * chosen['oos_recall']:.1f} %  ({report['rule']})")
    if chosen["tied_to"] - chosen["tied_from"] >= 0.01:
        print(f"                  every threshold above {chosen['tied_from']:.2f} up to "
              f"{chosen['tied_to']:.2f} gives the same: the middle is recommended, the farthest "
              f"from the messages on either side")
    print(f"config.yml:  - name: FallbackClassifier\n    threshold: {chosen['threshold']:.2f}")
    print(f"plot and sweep: {Path(ns.output_dir) / 'threshold.png'}, "
          f"{Path(ns.output_dir) / 'threshold.json'}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="Few-shot accuracy of an encoder (no Rasa): heads over frozen embeddings.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--encoder", default="default")
    p.add_argument("--dataset", required=True, help="BANKING77 or CLINC150 (or a folder)")
    p.add_argument("--train-split", default="train_10")
    p.add_argument("--test-split", default="test")
    p.add_argument("--heads", nargs="*", default=["prototype", "refined", "matching", "logreg"])
    p.add_argument("--inner-epochs", nargs="*", type=int, default=[],
                   help="Also run the component's inner loop for these epochs (one row each).")
    p.add_argument("--finetune-layers", type=int, default=FewShotConfig.finetune_layers)
    p.add_argument("--finetune-learning-rate", type=float,
                   default=FewShotConfig.finetune_learning_rate)
    p.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="Seeds of the inner loop (mean and std are reported).")
    p.add_argument("--data-root", default=None)


def _run_evaluate(ns: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from rasa_meta.runtime.encoder import SentenceEncoder
    from rasa_meta.tooling.evaluation import evaluate_encoder, inner_loop_accuracy
    from rasa_meta.training.corpus import data_root, load_split

    root = Path(ns.data_root) if ns.data_root else data_root()
    train = load_split(root / ns.dataset / ns.train_split)
    test = load_split(root / ns.dataset / ns.test_split)
    encoder = SentenceEncoder.from_pretrained(ns.encoder)
    results: dict = evaluate_encoder(encoder, train, test, ns.heads) if ns.heads else {}
    for epochs in ns.inner_epochs:
        runs = [
            inner_loop_accuracy(ns.encoder, train, test, epochs, seed,
                                finetune_layers=ns.finetune_layers,
                                finetune_learning_rate=ns.finetune_learning_rate)
            for seed in ns.seeds
        ]
        accs = [r["accuracy"] for r in runs]
        results[f"inner_loop[{epochs}]"] = {
            "accuracy": float(np.mean(accs)),
            "accuracy_std": float(np.std(accs)),
            "seeds": ns.seeds,
            "adapt_seconds": float(np.mean([r["adapt_seconds"] for r in runs])),
        }
    print(json.dumps({"encoder": ns.encoder, "dataset": ns.dataset,
                      "train": ns.train_split, "test": ns.test_split, "results": results}))
    return 0


def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    from rasa_meta.tooling.benchmark import BenchmarkOptions

    p = sub.add_parser(
        "benchmark",
        help="Compare the plugin (trained and parsed through Rasa) with Rasa's DIET pipeline "
             "and frozen-encoder baselines on identical splits.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_dataclass_arguments(p, BenchmarkOptions)
    p.add_argument("--oos", action="store_true",
                   help="Run the out-of-scope protocol instead: CLINC150 (oos) and "
                        "BANKING77-OOS (id-oos, ood-oos), 10-shot and full, threshold chosen "
                        "on valid; writes oos.json and oos.md.")
    p.add_argument("--oos-encoder", action="append", default=[], metavar="DATASET=ENCODER",
                   help="Same as --encoder DATASET=ENCODER (kept for existing scripts).")


def _encoders(ns: argparse.Namespace) -> Dict[str, str]:
    from rasa_meta.tooling.benchmark import parse_encoder_specs

    return parse_encoder_specs((ns.encoder or []) + list(ns.oos_encoder))


def _run_benchmark(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from rasa_meta.tooling.benchmark import BenchmarkOptions, run_benchmark

    if ns.oos:
        return _run_oos_benchmark(ns)
    options = BenchmarkOptions(**{
        **dataclass_values(BenchmarkOptions, ns),
        "encoder": _encoders(ns),
        "show_child_output": ns.verbose,
        "command": " ".join(["rasa-meta"] + sys.argv[1:]),
    })
    result = run_benchmark(options)
    out = Path(ns.output_dir)
    print((out / "results.md").read_text(encoding="utf-8"))
    print(f"Wrote {out / 'results.json'}, {out / 'results.md'} and "
          f"{', '.join(Path(p).name for p in result['plots'])}.")
    failed = [r for r in result["rows"] if r.get("error")]
    return 1 if failed else 0


def _run_oos_benchmark(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from rasa_meta.tooling.oos_eval import oos_markdown, run_oos_benchmark

    encoders = _encoders(ns)
    shots = ns.shots or ["10", "full"]
    rows = run_oos_benchmark(encoders, shots=shots, root=ns.data_root,
                             cache_dir=str(Path(ns.output_dir) / "embeddings"))
    out = Path(ns.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "oos.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    table = oos_markdown(rows)
    (out / "oos.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


def _add_check_data(sub: argparse._SubParsersAction) -> None:
    from rasa_meta.tooling.overlap import OverlapSettings

    p = sub.add_parser(
        "check-data",
        help="Report overlapping intents, misplaced and duplicate examples in Rasa NLU data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("files", nargs="+",
                   help="Rasa NLU YAML files, or folders searched for them (e.g. data/).")
    p.add_argument("--encoder", default="default",
                   help="The encoder the bot uses ('default', 'minilm', a path or hub name).")
    p.add_argument("--output-dir", default="results/check-data",
                   help="Where report.json and overlap_heatmap.png are written.")
    p.add_argument("--json", action="store_true",
                   help="Print the report as JSON instead of tables.")
    add_dataclass_arguments(p, OverlapSettings)
    p.add_argument("--max-length", type=int, default=FewShotConfig.max_length)
    p.add_argument("--encoder-prompt", default=None,
                   help="The bot's encoder_prompt, if its config sets one.")


def _nlu_files(specs: List[str]) -> List[str]:
    """The NLU YAML files named, folders expanded to the YAML files in them holding `nlu:`."""
    from pathlib import Path

    import yaml

    files: List[str] = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            files.append(str(path))
        elif path.is_dir():
            for candidate in sorted([*path.rglob("*.yml"), *path.rglob("*.yaml")]):
                try:
                    doc = yaml.safe_load(candidate.read_text(encoding="utf-8"))
                except yaml.YAMLError:
                    continue
                if isinstance(doc, dict) and doc.get("nlu"):
                    files.append(str(candidate))
        else:
            raise FileNotFoundError(spec)
    return files


def _run_check_data(ns: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from rasa_meta.runtime.encoder import (
        DEFAULT_ENCODER,
        SHIPPED_ENCODER_DIR,
        EncoderNotFoundError,
        SentenceEncoder,
    )
    from rasa_meta.tooling.overlap import OverlapSettings, build_overlap_report, save_heatmap
    from rasa_meta.training.corpus import load_rasa_nlu

    def fail(message: str) -> int:
        print(f"rasa-meta check-data: {message}", file=sys.stderr)
        return 2

    try:
        files = _nlu_files(ns.files)
    except FileNotFoundError as e:
        return fail(f"no such file or folder: '{e.args[0]}'.")
    try:
        corpus = load_rasa_nlu(files) if files else None
    except (yaml.YAMLError, AttributeError, OSError, UnicodeDecodeError) as e:
        return fail(f"cannot read NLU data from {files}: {e}")
    if corpus is None or not corpus.texts:
        return fail(f"no intent examples found in {ns.files} (expected Rasa NLU YAML with "
                    f"'nlu:' and '- intent:' blocks).")
    if ns.encoder in (None, "", DEFAULT_ENCODER) and not SHIPPED_ENCODER_DIR.is_dir():
        return fail(f"the meta-trained 'default' encoder is not installed ({SHIPPED_ENCODER_DIR} "
                    f"is missing). Pass --encoder minilm, a model directory or a hub name.")
    try:
        encoder = SentenceEncoder.from_pretrained(ns.encoder, ns.max_length, ns.encoder_prompt)
    except EncoderNotFoundError as e:
        return fail(f"{e} Pass --encoder minilm, a model directory or a hub name.")
    report = build_overlap_report(
        corpus.texts, corpus.labels, encoder=encoder, **dataclass_values(OverlapSettings, ns)
    )
    out = Path(ns.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {"files": files, "encoder": ns.encoder, **report.to_dict(include_matrix=True)}
    (out / "report.json").write_text(
        json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    save_heatmap(report, out / "overlap_heatmap.png")
    if ns.json:
        print(json.dumps(data, ensure_ascii=False))
    else:
        print(report.to_table())
        print(f"Wrote {out / 'report.json'} and {out / 'overlap_heatmap.png'}.")
    return 0


def _add_inbox(sub: argparse._SubParsersAction) -> None:
    from rasa_meta.tooling.inbox import DEFAULT_OUTPUT_DIR, InboxOptions
    from rasa_meta.tooling.inbox_groups import LINKAGES

    defaults = InboxOptions()
    p = sub.add_parser(
        "inbox",
        help="What users said that the bot did not handle: read its tracker store, re-parse "
             "with the trained model, cluster the fallbacks, draft NLU data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--endpoints", default="endpoints.yml",
                   help="The bot's endpoints.yml; its tracker_store is read.")
    p.add_argument("--model", default=None,
                   help="A trained model (.tar.gz) or a folder of them (the newest is used; "
                        "default: models/).")
    p.add_argument("--since", default=None,
                   help="Only messages from then on: a span back from now (7d, 12h, 30m) or "
                        "an ISO date / date-time (local time unless it has a zone).")
    p.add_argument("--until", default=None, help="Only messages before then (same forms).")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR,
                   help="Where inbox.md, inbox.html, inbox.png, inbox.json and nlu_draft.yml "
                        "are written.")
    p.add_argument("--low-confidence", type=float, default=None,
                   help="Answered messages below this confidence are clustered with the "
                        "fallbacks (default: the FallbackClassifier threshold raised to "
                        "at least 0.7).")
    p.add_argument("--scale-factor", type=float, default=defaults.scale_factor,
                   help="Clusters merge while their mean cosine distance is at most this "
                        "factor times that within the bot's own intents (higher: fewer, "
                        "broader clusters).")
    p.add_argument("--distance-threshold", type=float, default=None,
                   help="A fixed cosine distance instead of the scaled one.")
    p.add_argument("--linkage", choices=list(LINKAGES), default=defaults.linkage)
    p.add_argument("--min-cluster-size", type=int, default=defaults.min_cluster_size,
                   help="Distinct texts a cluster needs to be reported as one.")
    p.add_argument("--max-examples", type=int, default=defaults.max_examples,
                   help="Examples per intent in the draft NLU data.")
    p.add_argument("--no-progress", action="store_true", help="No progress bars.")


def _run_inbox(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from rasa_meta.tooling.inbox import InboxOptions, run_inbox
    from rasa_meta.tooling.inbox_report import DRAFT_FILE, HTML_FILE, JSON_FILE, MARKDOWN_FILE
    from rasa_meta.tooling.inbox_traffic import InboxError

    options = InboxOptions(
        endpoints=Path(ns.endpoints), model=ns.model, output_dir=Path(ns.output_dir),
        since=ns.since, until=ns.until, low_confidence=ns.low_confidence,
        distance_threshold=ns.distance_threshold, scale_factor=ns.scale_factor,
        linkage=ns.linkage,
        min_cluster_size=ns.min_cluster_size, max_examples=ns.max_examples,
        progress=not ns.no_progress,
    )
    try:
        result = run_inbox(options)
    except InboxError as e:
        print(f"rasa-meta inbox: {e}", file=sys.stderr)
        return 2
    s = result["summary"]
    print(f"{s['messages']} user messages in {s['conversations']} conversations; "
          f"{s['unhandled']} ({100 * s['unhandled_share']:.0f} %) not handled "
          f"({s['fell_back']} fell back, {s['low_confidence']} low confidence).")
    for c in result["clusters"][:10]:
        kind = "existing" if c["kind"] == "existing_intent" else "new"
        print(f"  cluster {c['id']:>2}: {c['messages']:>4} messages  {kind:<8} {c['name']:<28} "
              f"nearest {c['nearest_intent']} ({c['similarity']:.2f})  "
              f"e.g. \"{c['representatives'][0]['text']}\"")
    if len(result["clusters"]) > 10:
        print(f"  ... {len(result['clusters']) - 10} more clusters")
    print(f"{s['unclustered_messages']} messages unclustered; {s['review']} confident "
          f"prediction(s) to review.")
    share = result.get("traffic_share") or {}
    if "out_of_scope_share" in share:
        low, high = share["interval"]
        print(f"Out of scope (estimated): {100 * share['out_of_scope_share']:.0f} % "
              f"({100 * low:.0f}-{100 * high:.0f} %); FallbackClassifier threshold for this "
              f"traffic: {share['threshold']:.2f} (`rasa-meta calibrate` to set it).")
    out = Path(ns.output_dir)
    print(f"Wrote {out / MARKDOWN_FILE}, {out / HTML_FILE}, {out / JSON_FILE} and "
          f"{out / DRAFT_FILE} in {result['timings']['total_seconds']:.0f} s.")
    return 0


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="Estimate how much of the bot's traffic is out of scope (no labels needed) and "
             "print the FallbackClassifier threshold for it, for the trained model as it is.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default=None,
                   help="A trained model (.tar.gz) or a folder of them (the newest is used; "
                        "default: models/).")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--messages", default=None,
                        help="The bot's messages, one per line (or Rasa NLU YAML).")
    source.add_argument("--endpoints", default=None,
                        help="The bot's endpoints.yml: its tracker store is read, as "
                             "`rasa-meta inbox` reads it.")
    p.add_argument("--since", default=None,
                   help="With --endpoints: only messages from then on (7d, 12h, an ISO date).")
    p.add_argument("--until", default=None, help="With --endpoints: only messages before then.")
    p.add_argument("--cost-wrong", type=float, default=1.0,
                   help="What a wrong answer costs against a needless fallback (2: twice as "
                        "much); the threshold is the P(right) above which answering is cheaper.")
    p.add_argument("--json", action="store_true", help="Print the result as one JSON object.")
    p.add_argument("--write", default=None, metavar="CONFIG",
                   help="Set the FallbackClassifier threshold in this config.yml (no other "
                        "line changes).")


def _run_calibrate(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from rasa_meta.tooling.calibrate import run_calibrate, write_threshold
    from rasa_meta.tooling.inbox_traffic import InboxError

    try:
        result = run_calibrate(
            ns.model, Path(ns.messages) if ns.messages else None,
            Path(ns.endpoints) if ns.endpoints else None, ns.since, ns.until, ns.cost_wrong,
        )
        if ns.write:
            write_threshold(Path(ns.write), result["threshold"])
            result["written_to"] = ns.write
    except InboxError as e:
        print(f"rasa-meta calibrate: {e}", file=sys.stderr)
        return 2
    if ns.json:
        print(json.dumps(result))
        return 0
    low, high = result["interval"]
    t_low, t_high = result["threshold_interval"]
    where = result.get("tracker_store") or result.get("messages_file")
    print(f"{result['messages']} messages from {where}")
    print(f"out-of-scope share: {100 * result['out_of_scope_share']:.0f} % "
          f"({100 * result['interval_level']:.0f} % interval {100 * low:.0f}-{100 * high:.0f} %); "
          f"the model's confidences assume {100 * result['configured_share']:.0f} % "
          f"(out_of_scope_share)")
    current = result["current_threshold"]
    print(f"FallbackClassifier threshold for this traffic: {result['threshold']:.2f} "
          f"({t_low:.2f}-{t_high:.2f} over the interval; a wrong answer costing "
          f"{result['cost_wrong']:g} x a fallback)"
          + (f"; the model was trained with {current:.2f}" if current is not None else ""))
    if ns.write:
        print(f"Set the FallbackClassifier threshold to {result['threshold']:.2f} in {ns.write}; "
              f"the threshold is part of the trained model: run `rasa train` to use it.")
    else:
        print(f"config.yml:  - name: FallbackClassifier\n    threshold: {result['threshold']:.2f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rasa-meta", description="Few-shot intent classification for Rasa."
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_meta_train(sub)
    _add_train_scorer(sub)
    _add_threshold(sub)
    _add_evaluate(sub)
    _add_benchmark(sub)
    _add_check_data(sub)
    _add_inbox(sub)
    _add_calibrate(sub)
    return parser


COMMANDS = {
    "meta-train": _run_meta_train,
    "train-scorer": _run_train_scorer,
    "threshold": _run_threshold,
    "evaluate": _run_evaluate,
    "benchmark": _run_benchmark,
    "check-data": _run_check_data,
    "inbox": _run_inbox,
    "calibrate": _run_calibrate,
}


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    ns.command_line = shlex.join(["rasa-meta", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO if ns.verbose else logging.WARNING)
    return COMMANDS[ns.command](ns)


if __name__ == "__main__":
    sys.exit(main())
