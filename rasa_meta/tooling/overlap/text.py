"""The overlap report as text: short warning lines and markdown tables."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

# The report is an analysis.OverlapReport, which formats itself through this module; typed
# loosely here so that the formatter does not import the report back (no import cycle).
OverlapReport = Any


def summary_lines(report: OverlapReport, max_items: int = 3) -> List[str]:
    """A few short warning lines, one per kind of finding; empty when all is well."""
    lines: List[str] = []
    close = report.close_pairs
    if close:
        shown = ", ".join(
            f"{p.intent_a} ~ {p.intent_b} ({p.similarity:.2f})" for p in close[:max_items]
        )
        lines.append(
            f"{_count(len(close), 'intent pair')} very similar (prototype cosine >= "
            f"{report.similarity_threshold:.2f}): {shown}{_more(len(close), max_items)}"
        )
    if report.misplaced_examples:
        shown = ", ".join(
            f"'{clip(m.text, 40)}' ({m.intent} -> {m.nearest_intent})"
            for m in report.misplaced_examples[:max_items]
        )
        n = len(report.misplaced_examples)
        lines.append(
            f"{_count(n, 'example')} closer to another intent than to {_its(n)} own: "
            f"{shown}{_more(n, max_items)}"
        )
    if report.duplicates:
        shown = ", ".join(
            f"'{clip(d.text_a, 30)}' ({d.intent_a}) / '{clip(d.text_b, 30)}' ({d.intent_b})"
            for d in report.duplicates[:max_items]
        )
        n = report.duplicates_total or len(report.duplicates)
        lines.append(
            f"{_plural(n, 'pair')} of near-duplicate examples under different intents "
            f"(cosine >= {report.duplicate_threshold:.2f} or same text): "
            f"{shown}{_more(n, max_items)}"
        )
    if report.too_few_examples:
        items = sorted(report.too_few_examples.items(), key=lambda kv: (kv[1], kv[0]))
        shown = ", ".join(f"{name} ({count})" for name, count in items[: max_items * 2])
        lines.append(
            f"{_count(len(items), 'intent')} fewer than {report.min_examples} examples: "
            f"{shown}{_more(len(items), max_items * 2)}"
        )
    if report.unreadable_examples:
        items = [(lab, t) for lab, ts in sorted(report.unreadable_examples.items()) for t in ts]
        shown = ", ".join(f"'{clip(t, 20)}' ({lab})" for lab, t in items[:max_items])
        lines.append(
            f"{_count(len(items), 'example')} made only of characters the encoder does not "
            f"know (emoji, another script); training leaves them out: "
            f"{shown}{_more(len(items), max_items)}"
        )
    return lines



def report_table(report: OverlapReport, max_rows: int = 20) -> str:
    """The report as markdown tables (readable as plain text), longest lists truncated."""
    out = [
        f"# Intent overlap report: {_plural(len(report.intents), 'intent')}, "
        f"{_plural(report.n_examples, 'example')}",
        "",
    ]
    summary = summary_lines(report)
    out += [f"- {line}" for line in summary] if summary else ["No problems found."]

    out += ["", f"## Most similar intents (prototype cosine; flagged >= "
                f"{report.similarity_threshold:.2f})", ""]
    rows = [
        [p.intent_a, p.intent_b, f"{p.similarity:.3f}", str(p.misplaced),
         "yes" if p.above_threshold else ""]
        for p in report.similar_intents
    ]
    out += _table(["intent A", "intent B", "similarity", "misplaced", "flagged"], rows,
                  max_rows, empty="(fewer than two intents)")

    out += ["", "## Examples closer to another intent than to their own "
                "(own prototype without the example)", ""]
    rows = [
        [clip(m.text, 60), m.intent, m.nearest_intent, f"{m.own_similarity:.3f}",
         f"{m.other_similarity:.3f}"]
        for m in report.misplaced_examples
    ]
    out += _table(["example", "intent", "nearer to", "own sim", "other sim"], rows,
                  max_rows, empty="(none)")

    out += ["", f"## Near-duplicate examples across intents (cosine >= "
                f"{report.duplicate_threshold:.2f} or same text)", ""]
    rows = [
        [clip(d.text_a, 40), d.intent_a, clip(d.text_b, 40), d.intent_b,
         "same text" if d.identical_text else f"{d.similarity:.3f}"]
        for d in report.duplicates
    ]
    total = max(report.duplicates_total, len(rows))
    out += _table(["example A", "intent A", "example B", "intent B", "similarity"], rows,
                  max_rows, empty="(none)", total=total)

    out += ["", f"## Intents with fewer than {report.min_examples} examples", ""]
    rows = [
        [name, str(count)]
        for name, count in sorted(report.too_few_examples.items(), key=lambda kv: kv[1])
    ]
    out += _table(["intent", "examples"], rows, max_rows, empty="(none)")
    return "\n".join(out) + "\n"


def _count(n: int, noun: str) -> str:
    verb = "is" if n == 1 else "are"
    if noun == "intent":
        verb = "has" if n == 1 else "have"
    return f"{n} {noun}{'' if n == 1 else 's'} {verb}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _its(n: int) -> str:
    return "its" if n == 1 else "their"


def _more(total: int, shown: int) -> str:
    return f" (+{total - shown} more)" if total > shown else ""


def clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _cell(value: str) -> str:
    return str(value).replace("|", "\\|")


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    max_rows: int,
    empty: str,
    total: Optional[int] = None,
) -> List[str]:
    if not rows:
        return [empty]
    shown = [[_cell(c) for c in row] for row in rows[: max(max_rows, 1)]]
    widths = [max(len(h), *(len(r[i]) for r in shown)) for i, h in enumerate(header)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in shown]
    total = len(rows) if total is None else total
    if total > len(shown):
        lines.append(f"... and {total - len(shown)} more (see report.json)")
    return lines
