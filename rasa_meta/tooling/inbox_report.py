"""The inbox's outputs: ``inbox.json``, ``inbox.md``, a standalone ``inbox.html`` with a
plot (``inbox.png``), and ``nlu_draft.yml``, NLU data to edit and merge into the bot."""

from __future__ import annotations

import base64
import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

import numpy as np

from rasa_meta.tooling.inbox_groups import ClusterSummary, ReviewItem
from rasa_meta.tooling.inbox_traffic import DistinctTexts, Traffic, format_time
from rasa_meta.tooling.nlu_text import normalise_text, yaml_safe_example

if TYPE_CHECKING:
    from rasa_meta.tooling.bot_model import ParsedTexts

JSON_FILE = "inbox.json"
MARKDOWN_FILE = "inbox.md"
HTML_FILE = "inbox.html"
PLOT_FILE = "inbox.png"
DRAFT_FILE = "nlu_draft.yml"
# Representative messages shown per cluster in the tables.
REPRESENTATIVES = 5
# Points drawn in the map: t-SNE time grows quickly with the number of points.
MAX_PLOT_POINTS = 1500
# Rows of the unclustered and review lists in the Markdown / HTML (all are in inbox.json).
MAX_LISTED = 40
PLOT_CLUSTERS = 10


def _cluster_dict(
    cluster: ClusterSummary, texts: Sequence[str], counts: Sequence[int]
) -> Dict[str, Any]:
    return {
        "id": cluster.id,
        "name": cluster.name,
        "kind": "existing_intent" if cluster.near_existing else "new_intent",
        "messages": cluster.messages,
        "distinct_texts": len(cluster.members),
        "senders": cluster.senders,
        "nearest_intent": cluster.nearest_intent,
        "similarity": round(cluster.similarity, 4),
        "member_similarity": round(cluster.member_similarity, 4),
        "cohesion": round(cluster.cohesion, 4),
        "representatives": [{"text": texts[m], "count": counts[m]}
                            for m in cluster.members[:REPRESENTATIVES]],
        "texts": [texts[m] for m in cluster.members],
    }


def build_result(
    base: Dict[str, Any],
    traffic: Traffic,
    distinct: DistinctTexts,
    parsed: ParsedTexts,
    unhandled: np.ndarray,
    confident: np.ndarray,
    clusters: List[ClusterSummary],
    leftover: List[int],
    review: List[ReviewItem],
    timings: Dict[str, float],
    support_intents: Sequence[str],
) -> Dict[str, Any]:
    """Everything the reports show, JSON-ready. Indices in ``clusters`` / ``leftover`` are
    into ``unhandled``, those in ``review`` into ``confident``."""
    counts = distinct.counts
    unhandled_texts = [distinct.texts[i] for i in unhandled]
    unhandled_counts = [counts[i] for i in unhandled]
    training = base.pop("training_texts")
    low = base["fallback"]["low_confidence"]
    # group of each distinct text: a cluster id, "unclustered", "review" or "handled"
    group: Dict[int, Any] = {int(i): "handled" for i in confident}
    for cluster in clusters:
        for m in cluster.members:
            group[int(unhandled[m])] = cluster.id
    for m in leftover:
        group[int(unhandled[m])] = "unclustered"
    for item in review:
        group[int(confident[item.index])] = "review"
    messages = []
    for d, ids in enumerate(distinct.message_ids):
        for i in ids:
            msg = traffic.messages[i]
            messages.append({
                "sender_id": msg.sender_id, "timestamp": msg.timestamp, "text": msg.text,
                "recorded_intent": msg.recorded_intent,
                "recorded_confidence": msg.recorded_confidence,
                "intent": parsed.intent[d], "top_intent": parsed.top_intent[d],
                "confidence": round(float(parsed.confidence[d]), 4), "group": group[d],
            })
    messages.sort(key=lambda m: (m["timestamp"], m["sender_id"]))
    n_messages = len(traffic.messages)
    fell_back = int(sum(counts[i] for i in np.flatnonzero(parsed.fell_back)))
    n_unhandled = int(sum(unhandled_counts))
    recorded_fallback = sum(m.recorded_intent == "nlu_fallback" for m in traffic.messages)
    return {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **base,
        "window": {**base["window"], "since_utc": format_time(traffic.since),
                   "until_utc": format_time(traffic.until)},
        "summary": {
            "messages": n_messages,
            "distinct_texts": len(distinct.texts),
            "conversations": traffic.conversations,
            "conversations_in_store": traffic.conversations_in_store,
            "skipped": traffic.skipped,
            "fell_back": fell_back,
            "fell_back_when_sent": int(recorded_fallback),
            "low_confidence": n_unhandled - fell_back,
            "unhandled": n_unhandled,
            "unhandled_share": round(n_unhandled / n_messages, 4) if n_messages else 0.0,
            "clusters": len(clusters),
            "clustered_messages": int(sum(c.messages for c in clusters)),
            "unclustered_messages": int(sum(unhandled_counts[m] for m in leftover)),
            "review": len(review),
            "first_message_utc": format_time(min(m.timestamp for m in traffic.messages)),
            "last_message_utc": format_time(max(m.timestamp for m in traffic.messages)),
        },
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "clusters": [_cluster_dict(c, unhandled_texts, unhandled_counts) for c in clusters],
        "unclustered": [
            {"text": unhandled_texts[m], "count": unhandled_counts[m],
             "top_intent": parsed.top_intent[int(unhandled[m])],
             "confidence": round(float(parsed.confidence[int(unhandled[m])]), 4)}
            for m in leftover
        ],
        "review": [
            {"text": distinct.texts[int(confident[it.index])],
             "count": counts[int(confident[it.index])],
             "predicted": it.predicted, "confidence": round(it.confidence, 4),
             "nearest_examples_intent": it.neighbours_intent,
             "nearest_examples": [{"text": training[j], "intent": support_intents[j],
                                   "similarity": round(s, 4)} for j, s in it.neighbours]}
            for it in review
        ],
        "low_confidence_rule": f"fell back, or confidence below {low:.2f}",
        "messages": messages,
    }


def draft_yaml(result: Dict[str, Any], max_examples: int, training_texts: Sequence[str]) -> str:
    """Rasa NLU YAML: suggested examples for existing intents, then candidate new intents.

    Texts the bot already has as training examples are left out; the examples of a cluster
    come nearest-to-its-centre first."""
    known = {normalise_text(t) for t in training_texts}
    existing: Dict[str, List[Dict[str, Any]]] = {}
    new: List[Dict[str, Any]] = []
    for cluster in result["clusters"]:
        (existing.setdefault(cluster["name"], []) if cluster["kind"] == "existing_intent"
         else new).append(cluster)
    summary = result["summary"]
    lines = [
        f"# Draft NLU data from `rasa-meta inbox`, {result['generated_at']}: "
        f"{summary['unhandled']} of {summary['messages']} user messages were not handled",
        f"# (fell back, or confidence below {result['fallback']['low_confidence']:.2f}); "
        f"these are the clusters they form.",
        "# Check every example, delete what does not belong, rename the candidate intents,",
        "# then move the blocks into data/nlu.yml. A new intent also needs a response, a",
        "# rule or story, and an entry in domain.yml. Then retrain: rasa train (or",
        "# rasa train --finetune if only existing intents got examples: Rasa fine-tunes",
        "# only on the intents the model already has).",
        'version: "3.1"',
        "nlu:",
    ]

    def block(intent: str, clusters: List[Dict[str, Any]], comment: str) -> None:
        texts: List[str] = []
        for cluster in clusters:
            for text in cluster["texts"]:
                key = normalise_text(text)
                if key not in known and len(texts) < max_examples:
                    known.add(key)
                    texts.append(yaml_safe_example(text))
        if not texts:
            return
        lines.append(comment)
        lines.append(f"- intent: {intent}")
        lines.append("  examples: |")
        lines.extend(f"    - {t}" for t in texts)

    for intent, clusters in existing.items():
        ids = ", ".join(str(c["id"]) for c in clusters)
        sims = ", ".join(f"{c['similarity']:.2f}" for c in clusters)
        n = sum(c["messages"] for c in clusters)
        block(intent, clusters, f"# suggested examples for the existing intent '{intent}' "
                                f"(check them: such suggestions name the right intent about "
                                f"half the time): cluster {ids}, {n} messages, similarity {sims}")
    for cluster in new:
        block(cluster["name"], [cluster],
              f"# candidate new intent (placeholder name): cluster {cluster['id']}, "
              f"{cluster['messages']} messages from {cluster['senders']} conversation(s); "
              f"nearest existing intent '{cluster['nearest_intent']}' at "
              f"{cluster['similarity']:.2f}")
    if lines[-1] == "nlu:":
        lines[-1] = "nlu: []  # no cluster of unhandled messages in this window"
    if result["review"]:
        lines.append(f"# {len(result['review'])} confident prediction(s) disagree with their "
                     f"nearest training examples: see 'review' in inbox.md.")
    return "\n".join(lines) + "\n"


def _map(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D layout of unit vectors: t-SNE on cosine distance (PCA for a handful)."""
    n = len(embeddings)
    if n < 5:
        return np.pad(embeddings[:, :2], ((0, 0), (0, max(0, 2 - embeddings.shape[1]))))
    if n < 30:
        centred = embeddings - embeddings.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T
    from sklearn.manifold import TSNE

    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3.0), init="pca",
                learning_rate="auto", metric="cosine", random_state=seed)
    return tsne.fit_transform(embeddings)


def plot(result: Dict[str, Any], embeddings: np.ndarray, cluster_of: np.ndarray,
         path: Path) -> None:
    """Left: a map of the unhandled messages (t-SNE of the bot's embeddings), the largest
    clusters in colour. Right: messages per cluster."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    # pyplot's first import logs pyparsing deprecations of matplotlib's own style files
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    clusters = result["clusters"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5),
                                      gridspec_kw={"width_ratios": [1.15, 1]})
    rng = np.random.default_rng(0)
    idx = np.arange(len(embeddings))
    if len(idx) > MAX_PLOT_POINTS:  # keep the clustered points, sample the rest
        clustered = idx[cluster_of > 0]
        others = idx[cluster_of <= 0]
        keep = max(0, MAX_PLOT_POINTS - len(clustered))
        idx = np.concatenate([clustered[:MAX_PLOT_POINTS],
                              rng.permutation(others)[:keep]])
    if len(idx):
        xy = _map(embeddings[idx])
        ids = cluster_of[idx]
        colours = plt.get_cmap("tab10")
        shown = [c["id"] for c in clusters[:PLOT_CLUSTERS]]
        rest = ~np.isin(ids, shown)
        left.scatter(xy[rest, 0], xy[rest, 1], s=10, c="#c8c8c8",
                     label="other clusters / unclustered")
        for k, cid in enumerate(shown):
            sel = ids == cid
            name = clusters[k]["name"]
            left.scatter(xy[sel, 0], xy[sel, 1], s=18, color=colours(k % 10),
                         label=f"{cid}: {name} ({clusters[k]['messages']})")
        left.legend(fontsize=7, loc="best", framealpha=0.8)
    left.set_title("Unhandled messages (t-SNE of the bot's encoder)")
    left.set_xticks([])
    left.set_yticks([])
    top = clusters[:15]
    if top:
        labels = [f"{c['id']}: {c['name']}" for c in top]
        values = [c["messages"] for c in top]
        colours_bar = ["#4c72b0" if c["kind"] == "new_intent" else "#55a868" for c in top]
        right.barh(range(len(top)), values, color=colours_bar, height=0.6)
        right.set_yticks(range(len(top)))
        right.set_yticklabels(labels)
        right.set_ylim(max(len(top), 4) - 0.3, -0.7)  # largest on top; few clusters, slim bars
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
        right.set_xlabel("messages")
        right.set_title("Clusters (blue: candidate new intent, green: near an existing one)",
                        fontsize=9)
        right.tick_params(axis="y", labelsize=8)
    else:
        right.text(0.5, 0.5, "no clusters", ha="center", va="center")
        right.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _window(result: Dict[str, Any]) -> str:
    w = result["window"]
    if w["since"] is not None and w["until"] is not None:
        return f"messages from {w['since_utc']} to {w['until_utc']}"
    if w["since"] is not None:
        return f"messages since {w['since_utc']}"
    if w["until"] is not None:
        return f"messages before {w['until_utc']}"
    return "all stored messages"


def _n(count: int, word: str) -> str:
    """``1 cluster``, ``2 clusters``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def _share_lines(share: Optional[Dict[str, Any]]) -> List[str]:
    """The traffic's estimated out-of-scope share and its threshold (``rasa-meta calibrate``)."""
    if not share or "error" in share:
        return []
    low, high = share["interval"]
    current = share.get("current_threshold")
    return [
        f"Out of scope (estimated from these messages, no labels): "
        f"**{100 * share['out_of_scope_share']:.0f} %** ({100 * share['interval_level']:.0f} % "
        f"interval {100 * low:.0f}-{100 * high:.0f} %); the model's confidences assume "
        f"{100 * share['configured_share']:.0f} %. FallbackClassifier threshold for this "
        f"traffic: **{share['threshold']:.2f}**"
        + (f" (the model uses {current:.2f})" if current is not None else "")
        + "; `rasa-meta calibrate --write config.yml` sets it.",
        "",
    ]


def markdown(result: Dict[str, Any]) -> str:
    s = result["summary"]
    lines = [
        "# NLU inbox",
        "",
        f"Model `{result['model']}`, tracker store {result['tracker_store']}, "
        f"{_window(result)} (the first at {s['first_message_utc']}, the last at "
        f"{s['last_message_utc']}).",
        "",
        f"**{s['messages']}** user messages in {s['conversations']} conversations "
        f"({s['distinct_texts']} distinct texts). **{s['unhandled']}** "
        f"({100 * s['unhandled_share']:.0f} %) were not handled: {s['fell_back']} fell back "
        f"(FallbackClassifier threshold {result['fallback']['threshold']}), "
        f"{s['low_confidence']} had a confidence below "
        f"{result['fallback']['low_confidence']:.2f}. They form **{_n(s['clusters'], 'cluster')}"
        f"** ({_n(s['clustered_messages'], 'message')}); {_n(s['unclustered_messages'], 'message')}"
        f" stay unclustered. {_n(s['review'], 'confident prediction')} disagree with their "
        f"nearest training examples.",
        "",
        *_share_lines(result.get("traffic_share")),
        "## Clusters",
        "",
        "| # | suggested intent | messages | conversations | nearest intent (similarity) | "
        "representative messages |",
        "|---|---|---|---|---|---|",
    ]
    for c in result["clusters"]:
        kind = "" if c["kind"] == "existing_intent" else " *(new)*"
        reps = "<br>".join(
            _md_escape(r["text"]) + (f" ×{r['count']}" if r["count"] > 1 else "")
            for r in c["representatives"]
        )
        lines.append(f"| {c['id']} | `{c['name']}`{kind} | {c['messages']} | {c['senders']} | "
                     f"{c['nearest_intent']} ({c['similarity']:.2f}) | {reps} |")
    if not result["clusters"]:
        lines.append("| – | no cluster | | | | |")
    lines += ["", f"## Unclustered messages ({len(result['unclustered'])})", ""]
    for u in result["unclustered"][:MAX_LISTED]:
        count = f" ×{u['count']}" if u["count"] > 1 else ""
        lines.append(f"- {_md_escape(u['text'])}{count} "
                     f"({u['top_intent']} {u['confidence']:.2f})")
    if len(result["unclustered"]) > MAX_LISTED:
        lines.append(f"- … {len(result['unclustered']) - MAX_LISTED} more in inbox.json")
    lines += ["", f"## Confident predictions to review ({len(result['review'])})", "",
              "The bot answered these confidently, but their nearest training examples carry "
              "another intent.", ""]
    if result["review"]:
        lines += ["| message | predicted (confidence) | nearest examples |", "|---|---|---|"]
        for r in result["review"][:MAX_LISTED]:
            near = "<br>".join(f"{_md_escape(n['text'])} ({n['intent']}, {n['similarity']:.2f})"
                               for n in r["nearest_examples"])
            lines.append(f"| {_md_escape(r['text'])} | {r['predicted']} "
                         f"({r['confidence']:.2f}) | {near} |")
    lines += [
        "",
        "## Next steps",
        "",
        f"1. Edit `{DRAFT_FILE}`: keep the examples that belong, rename candidate intents.",
        "2. Merge it into `data/nlu.yml`; give new intents a response and a rule or story.",
        "3. Retrain: `rasa train --finetune` if only existing intents got examples, "
        "`rasa train` for new intents (Rasa fine-tunes only on the intents the model has); "
        "test, deploy, and run the inbox again.",
        "",
    ]
    return "\n".join(lines)


def html_page(result: Dict[str, Any], png: Optional[bytes]) -> str:
    """A standalone page (the plot inlined) with the clusters and lists."""
    e = html.escape
    s = result["summary"]
    rows = []
    for c in result["clusters"]:
        reps = "<br>".join(e(r["text"]) + (f" ×{r['count']}" if r["count"] > 1 else "")
                           for r in c["representatives"])
        more = "".join(f"<li>{e(t)}</li>" for t in c["texts"][REPRESENTATIVES:])
        details = (f"<details><summary>{len(c['texts']) - REPRESENTATIVES} more</summary>"
                   f"<ul>{more}</ul></details>" if more else "")
        kind = "new intent" if c["kind"] == "new_intent" else "existing intent"
        rows.append(f"<tr><td>{c['id']}</td><td><code>{e(c['name'])}</code><br>"
                    f"<small>{kind}</small></td><td>{c['messages']}</td><td>{c['senders']}</td>"
                    f"<td>{e(c['nearest_intent'])} ({c['similarity']:.2f})</td>"
                    f"<td>{reps}{details}</td></tr>")
    unclustered = "".join(
        f"<li>{e(u['text'])}{' ×' + str(u['count']) if u['count'] > 1 else ''} "
        f"<small>({e(str(u['top_intent']))} {u['confidence']:.2f})</small></li>"
        for u in result["unclustered"][:MAX_LISTED * 5]
    )
    review = "".join(
        f"<tr><td>{e(r['text'])}</td><td>{e(r['predicted'])} ({r['confidence']:.2f})</td><td>"
        + "<br>".join(f"{e(n['text'])} <small>({e(n['intent'])}, {n['similarity']:.2f})"
                      f"</small>" for n in r["nearest_examples"])
        + "</td></tr>"
        for r in result["review"][:MAX_LISTED * 5]
    )
    image = (f'<img alt="clusters" src="data:image/png;base64,'
             f'{base64.b64encode(png).decode("ascii")}">' if png else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>NLU inbox</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1250px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; margin: 1em 0; }}
td, th {{ border: 1px solid #ddd; padding: 6px 8px; vertical-align: top; text-align: left; }}
th {{ background: #f3f3f3; }} img {{ max-width: 100%; }} small {{ color: #666; }}
</style></head><body>
<h1>NLU inbox</h1>
<p>Model <code>{e(result['model'])}</code>, tracker store {e(result['tracker_store'])},
{e(_window(result))}; generated {e(result['generated_at'])}.</p>
<p><b>{s['messages']}</b> user messages in {s['conversations']} conversations
({s['distinct_texts']} distinct texts). <b>{s['unhandled']}</b>
({100 * s['unhandled_share']:.0f} %) were not handled: {s['fell_back']} fell back,
{s['low_confidence']} had a confidence below {result['fallback']['low_confidence']:.2f}.
They form <b>{_n(s['clusters'], 'cluster')}</b> ({_n(s['clustered_messages'], 'message')});
{_n(s['unclustered_messages'], 'message')} stay unclustered.</p>
{image}
<h2>Clusters</h2>
<table><tr><th>#</th><th>suggested intent</th><th>messages</th><th>conversations</th>
<th>nearest intent (similarity)</th><th>representative messages</th></tr>
{''.join(rows) or '<tr><td colspan="6">no cluster</td></tr>'}</table>
<h2>Unclustered messages ({len(result['unclustered'])})</h2><ul>{unclustered}</ul>
<h2>Confident predictions to review ({len(result['review'])})</h2>
<p>The bot answered these confidently, but their nearest training examples carry another
intent.</p>
<table><tr><th>message</th><th>predicted (confidence)</th><th>nearest examples</th></tr>
{review}</table>
<h2>Next steps</h2><ol><li>Edit <code>{DRAFT_FILE}</code>: keep the examples that belong,
rename candidate intents.</li><li>Merge it into <code>data/nlu.yml</code>; give new intents a
response and a rule or story.</li><li>Retrain: <code>rasa train --finetune</code> if only
existing intents got examples, <code>rasa train</code> for new intents; test, deploy, and run
the inbox again.</li></ol>
</body></html>
"""


def write_reports(
    output_dir: Path,
    base: Dict[str, Any],
    traffic: Traffic,
    distinct: DistinctTexts,
    parsed: ParsedTexts,
    unhandled: np.ndarray,
    confident: np.ndarray,
    clusters: List[ClusterSummary],
    leftover: List[int],
    review: List[ReviewItem],
    max_examples: int,
    timings: Dict[str, float],
    support_intents: Sequence[str],
) -> Dict[str, Any]:
    """Write inbox.json, inbox.md, inbox.html, inbox.png and nlu_draft.yml; return the
    result."""
    import time

    output_dir.mkdir(parents=True, exist_ok=True)
    training = list(base["training_texts"])
    result = build_result(base, traffic, distinct, parsed, unhandled, confident, clusters,
                          leftover, review, timings, support_intents)
    started = time.perf_counter()
    cluster_of = np.zeros(len(unhandled), dtype=int)
    for cluster in clusters:
        cluster_of[cluster.members] = cluster.id
    png_path = output_dir / PLOT_FILE
    plot(result, parsed.embeddings[unhandled], cluster_of, png_path)
    result["timings"]["report_seconds"] = round(time.perf_counter() - started, 2)
    result["timings"]["total_seconds"] = round(
        result["timings"]["total_seconds"] + result["timings"]["report_seconds"], 2)
    (output_dir / DRAFT_FILE).write_text(draft_yaml(result, max_examples, training),
                                         encoding="utf-8")
    (output_dir / MARKDOWN_FILE).write_text(markdown(result), encoding="utf-8")
    (output_dir / HTML_FILE).write_text(html_page(result, png_path.read_bytes()),
                                        encoding="utf-8")
    (output_dir / JSON_FILE).write_text(json.dumps(result, indent=1, ensure_ascii=False),
                                        encoding="utf-8")
    return result
