"""What a benchmark run writes: derived columns (ratios to DIET and to the bare encoder
forward, estimates for skipped DIET runs), the markdown tables and the plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Union

from rasa_meta.tooling.benchmark.methods import (
    BARE_FORWARD,
    DIET,
    METHODS,
    PLUGIN,
    PLUGIN_MATCHING,
)
from rasa_meta.tooling.benchmark.splits import SHOTS


def _estimate_skipped_diet(rows: List[Dict[str, Any]]) -> None:
    """Projected DIET train seconds for skipped rows, from this run's DIET rows.

    At a fixed number of epochs DIET's train time grows about linearly with the number of
    training examples, so the estimate scales the largest measured DIET split of the dataset.
    """
    measured = [r for r in rows if r["method"] == DIET and r.get("train_s") and r.get("n_train")]
    for row in rows:
        if row["method"] != DIET or not row.get("skipped"):
            continue
        same = [r for r in measured if r["dataset"] == row["dataset"]] or measured
        if same:
            ref = max(same, key=lambda r: r["n_train"])
            row["estimated_train_s"] = ref["train_s"] * row["n_train"] / ref["n_train"]
        else:
            row["estimated_train_s"] = None


def finish_rows(rows: List[Dict[str, Any]]) -> None:
    add_ratios(rows)
    _estimate_skipped_diet(rows)


def add_ratios(rows: List[Dict[str, Any]]) -> None:
    diet = {(r["dataset"], r["shots"], r["seed"]): r for r in rows
            if r["method"] == DIET and r.get("error") is None}
    bare = {r["dataset"]: r for r in rows if r["method"] == BARE_FORWARD and r.get("p50_ms")}
    for row in rows:
        ref = diet.get((row["dataset"], row["shots"], row["seed"]))
        for key, out in (("train_s", "train_vs_diet"), ("p50_ms", "p50_vs_diet")):
            ok = ref is not None and row.get(key) is not None and ref.get(key)
            row[out] = row[key] / ref[key] if ok else None
        if row["method"] in (PLUGIN, PLUGIN_MATCHING):
            forward = bare.get(row["dataset"])
            ok = forward is not None and row.get("p50_ms") is not None
            row["p50_vs_bare_forward"] = row["p50_ms"] / forward["p50_ms"] if ok else None
            ok = row.get("paired_parse_p50_ms") and row.get("paired_forward_p50_ms")
            row["paired_parse_vs_forward"] = (
                row["paired_parse_p50_ms"] / row["paired_forward_p50_ms"] if ok else None
            )


def latency_fields(seconds: List[float]) -> Dict[str, float]:
    from rasa_meta.training.metrics import percentile

    return {
        "p50_ms": 1000 * percentile(seconds, 50),
        "p95_ms": 1000 * percentile(seconds, 95),
        "latency_messages": len(seconds),
    }


def progress_line(row: Dict[str, Any]) -> str:
    parts = [f"[benchmark] {row['dataset']}"]
    if row["method"] != BARE_FORWARD:
        parts.append(f"{row['shots']}-shot seed={_seed(row['seed'])}")
    parts.append(row["method"])
    for key, name in (("accuracy", "acc"), ("train_s", "train_s"), ("p50_ms", "p50_ms"),
                      ("peak_rss_mb", "rss_mb")):
        if row.get(key) is not None:
            parts.append(f"{name}={row[key]:.3f}" if key == "accuracy" else
                         f"{name}={row[key]:.1f}")
    return " ".join(parts)


def _seed(seed: int | None) -> str:
    return "fixed" if seed is None else str(seed)


def _fmt(value: Any, digits: int = 1, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if percent:
        return f"{100 * value:.1f}"
    return f"{value:.{digits}f}"


def _mean_std(values: List[float]) -> str:
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{100 * mean:.1f}"
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def to_markdown(result: Dict[str, Any]) -> str:
    run, rows = result["run"], result["rows"]
    lines = [
        "# rasa-meta benchmark",
        "",
        f"`{run['command']}`",
        "",
        f"{run['started']} · {run['cpu']} ({run['cpu_count']} cores, {run['memory_gb']} GB) · "
        f"device {run['device']} · rasa {run['rasa']} · tensorflow {run['tensorflow']} · "
        f"torch {run['torch']} · transformers {run['transformers']} · "
        f"plugin encoder `{run['encoder']}` · total {run['wall_s']:.0f} s"
        + ("" if run.get("complete", True) else " · **incomplete run**"),
        "",
        "| dataset | shots | seed | method | acc % | macro-F1 % | train s | train ×DIET | "
        "p50 ms | p95 ms | p50 ×DIET | batch msg/s | peak RSS MB |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["method"] == BARE_FORWARD:
            continue
        if r.get("error"):
            lines.append(f"| {r['dataset']} | {r['shots']} | {_seed(r['seed'])} | {r['method']} "
                         f"| failed: {r['error'][:80]} |||||||||")
            continue
        if r.get("skipped"):
            estimate = r.get("estimated_train_s")
            note = (f"; est. train ≈ {estimate / 60:.0f} min from this run's DIET rows"
                    if estimate else "")
            lines.append(f"| {r['dataset']} | {r['shots']} | {_seed(r['seed'])} | {r['method']} "
                         f"| {r['skipped']}{note} |||||||||")
            continue
        lines.append(
            f"| {r['dataset']} | {r['shots']} | {_seed(r['seed'])} | {r['method']} "
            f"| {_fmt(r['accuracy'], percent=True)} | {_fmt(r['macro_f1'], percent=True)} "
            f"| {_fmt(r['train_s'])} | {_fmt(r.get('train_vs_diet'), 2)} "
            f"| {_fmt(r['p50_ms'])} | {_fmt(r['p95_ms'])} | {_fmt(r.get('p50_vs_diet'), 2)} "
            f"| {_fmt(r['batch_msgs_per_s'], 0)} | {_fmt(r['peak_rss_mb'], 0)} |"
        )
    bare = [r for r in rows if r["method"] == BARE_FORWARD]
    if bare:
        lines += [
            "",
            "Plugin parse latency against a bare encoder forward (one "
            "`SentenceEncoder.encode([text])` call with the dataset's plugin encoder). "
            "Standalone: the `bare_encoder_forward` run vs the parse p50 above (separate "
            "processes, run at different times). Paired: parse and forward alternate message by "
            "message in the plugin's process, so both see the same machine load.",
            "",
            "| dataset | shots | seed | method | forward p50 ms | parse p50 ms | parse ×forward "
            "| paired forward p50 ms | paired parse p50 ms | paired ×forward |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for b in bare:
            if b.get("error"):
                lines.append(f"| {b['dataset']} | | | {BARE_FORWARD} | failed: "
                             f"{b['error'][:80]} ||||||")
                continue
            lines.append(f"| {b['dataset']} | | | {BARE_FORWARD} | {_fmt(b['p50_ms'], 2)} "
                         "| | | | | |")
            for r in rows:
                if r["dataset"] == b["dataset"] and r["method"] in (PLUGIN, PLUGIN_MATCHING) \
                        and not r.get("error"):
                    lines.append(
                        f"| {r['dataset']} | {r['shots']} | {_seed(r['seed'])} | {r['method']} "
                        f"| {_fmt(b['p50_ms'], 2)} | {_fmt(r['p50_ms'], 2)} "
                        f"| {_fmt(r.get('p50_vs_bare_forward'), 2)} "
                        f"| {_fmt(r.get('paired_forward_p50_ms'), 2)} "
                        f"| {_fmt(r.get('paired_parse_p50_ms'), 2)} "
                        f"| {_fmt(r.get('paired_parse_vs_forward'), 2)} |"
                    )
    seeded = [r for r in rows if r["seed"] is not None and r["method"] != BARE_FORWARD]
    if seeded:
        lines += ["", "Accuracy % over seeds (mean ± sample std):", "",
                  "| dataset | shots | method | seeds | acc % | macro-F1 % |",
                  "|---|---|---|---:|---:|---:|"]
        groups: Dict[tuple, List[Dict[str, Any]]] = {}
        for r in seeded:
            groups.setdefault((r["dataset"], r["shots"], r["method"]), []).append(r)
        for (dataset, k, method), group in groups.items():
            ok = [r for r in group if r.get("accuracy") is not None]
            lines.append(f"| {dataset} | {k} | {method} | {len(ok)} "
                         f"| {_mean_std([r['accuracy'] for r in ok])} "
                         f"| {_mean_std([r['macro_f1'] for r in ok])} |")
    lines += [
        "",
        "train s: wall time of `rasa.model_training.train_nlu` (Rasa methods) or encoder load + "
        "embedding + head fit (minilm baselines), libraries already imported. "
        "p50/p95: one message at a time (`await agent.parse_message` for Rasa methods), "
        f"after {run['warmup_messages']} warm-up messages. "
        f"batch msg/s: {run['throughput_mode']} Peak RSS: the child process that ran the method "
        "(ru_maxrss), imports included.",
        "",
    ]
    return "\n".join(lines)


def write_plots(rows: List[Dict[str, Any]], out_dir: Union[str, Path]) -> List[Path]:
    """accuracy_vs_shots.png and accuracy_vs_train_seconds.png (one subplot per dataset)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    done = [r for r in rows if r["method"] != BARE_FORWARD and r.get("accuracy") is not None]
    datasets = sorted({r["dataset"] for r in rows if r["method"] != BARE_FORWARD})
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    markers = dict(zip(METHODS, "osD^v"))
    paths = []

    width = max(1, len(datasets))
    fig, axes = plt.subplots(1, width, figsize=(5 * width, 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        shots = [k for k in SHOTS if any(r["dataset"] == dataset and r["shots"] == k
                                         for r in done)]
        for m, method in enumerate(methods):
            xs, ys, errs = [], [], []
            offset = 0.05 * (m - (len(methods) - 1) / 2)  # keep equal points apart
            for i, k in enumerate(shots):
                accs = [r["accuracy"] for r in done
                        if (r["dataset"], r["shots"], r["method"]) == (dataset, k, method)]
                if accs:
                    mean = sum(accs) / len(accs)
                    xs.append(i + offset)
                    ys.append(100 * mean)
                    errs.append(100 * (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5)
            if xs:
                ax.errorbar(xs, ys, yerr=errs, marker=markers[method], capsize=3, label=method)
        ax.set_xticks(range(len(shots)))
        ax.set_xticklabels([k if k == "full" else f"{k}-shot" for k in shots])
        ax.set_title(dataset)
        ax.set_xlabel("training examples per intent")
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "accuracy_vs_shots.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, width, figsize=(5 * width, 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for method in methods:
            points = [(r["train_s"], 100 * r["accuracy"]) for r in done
                      if r["dataset"] == dataset and r["method"] == method and r.get("train_s")]
            if points:
                ax.scatter([p[0] for p in points], [p[1] for p in points],
                           marker=markers[method], label=method)
        ax.set_xscale("log")
        ax.set_title(dataset)
        ax.set_xlabel("train wall seconds (log)")
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "accuracy_vs_train_seconds.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
