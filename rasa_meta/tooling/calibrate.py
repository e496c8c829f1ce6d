"""``rasa-meta calibrate``: how much of a bot's traffic is out of scope, and the threshold for it.

The bot's unlabelled messages (a file, or its tracker store read as the inbox reads it) are
scored with the trained model; the out-of-scope share is estimated from their in-scope
probabilities (EM on the prior, bootstrap interval: :mod:`rasa_meta.runtime.traffic_share`),
and turned into the FallbackClassifier threshold to use with the model as it is. ``--write``
changes that one line of the bot's config.yml.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rasa_meta.runtime.model import FewShotIntentModel
from rasa_meta.runtime.traffic_share import (
    estimate_share_interval,
    fallback_threshold,
    in_scope_probability,
)
from rasa_meta.tooling.inbox_traffic import InboxError

# Texts embedded at once: bounded memory for large traffic files.
BATCH = 256


class CalibrationError(InboxError):
    """A problem the user can fix; printed as one line, exit code 2."""


def logits_from_embeddings(model: FewShotIntentModel, emb: Any) -> Tuple[np.ndarray, List[str]]:
    """The in-scope logit z and the top intent of each embedded message."""
    import torch

    if model.in_scope.method != "learned" or model.in_scope.scorer is None:
        raise CalibrationError(
            "the model's out_of_scope_detection is not the learned in-scope score, whose "
            "confidence the out-of-scope share calibrates: train with out_of_scope_detection "
            "true (the default) and an encoder that ships an in-scope scorer."
        )
    emb = torch.as_tensor(emb).float()
    head = model.head
    assert head is not None
    sims, probs = head.similarities(emb), head.predict_proba(emb)
    z = model.in_scope.logits(head, emb, probs, sims)
    return z.detach().numpy(), [model.labels[i] for i in probs.argmax(1).tolist()]


def message_logits(model: FewShotIntentModel, texts: Sequence[str]) -> Tuple[np.ndarray, List[str]]:
    """:func:`logits_from_embeddings` of texts, embedded in batches."""
    zs: List[np.ndarray] = []
    tops: List[str] = []
    for start in range(0, len(texts), BATCH):
        z, top = logits_from_embeddings(model, model.embed(list(texts[start:start + BATCH])))
        zs.append(z)
        tops += top
    return (np.concatenate(zs) if zs else np.zeros(0)), tops


def share_report(
    model: FewShotIntentModel,
    z: np.ndarray,
    cost_wrong: float = 1.0,
    current_threshold: Optional[float] = None,
) -> Dict[str, Any]:
    """The share estimate and the threshold it gives, from the messages' logits."""
    configured = model.in_scope.out_of_scope_share
    if configured is None:
        raise CalibrationError(
            "the model was trained before its confidence was tied to an out-of-scope share: "
            "retrain it with `rasa train`, then calibrate."
        )
    estimate = estimate_share_interval(in_scope_probability(z, model.in_scope.in_scope_map))
    return {
        **estimate.to_dict(),
        "threshold": fallback_threshold(estimate.share, configured, cost_wrong),
        # a higher share asks for a higher threshold: the interval's ends give its range
        "threshold_interval": [fallback_threshold(s, configured, cost_wrong)
                               for s in (estimate.low, estimate.high)],
        "configured_share": configured,
        "cost_wrong": cost_wrong,
        "current_threshold": current_threshold,
    }


def read_messages_file(path: Path) -> List[str]:
    """One message per line (blank lines skipped); Rasa NLU YAML is read for its texts."""
    if not path.is_file():
        raise CalibrationError(f"no messages file at '{path}': pass a text file with one "
                               f"message per line.")
    try:
        if path.suffix in {".yml", ".yaml"}:
            from rasa_meta.training.corpus import load_rasa_nlu

            texts = list(load_rasa_nlu(path).texts)
        else:
            texts = [" ".join(line.split()) for line in
                     path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as e:
        raise CalibrationError(f"cannot read '{path}': {' '.join(str(e).split())}") from e
    except Exception as e:  # YAML errors of several types
        raise CalibrationError(f"cannot read '{path}': {' '.join(str(e).split())}") from e
    texts = [t for t in texts if t]
    if not texts:
        raise CalibrationError(f"'{path}' holds no messages: one message per line is expected.")
    return texts


def run_calibrate(
    model: Optional[str],
    messages: Optional[Path] = None,
    endpoints: Optional[Path] = None,
    since: Optional[str] = None,
    until: Optional[str] = None,
    cost_wrong: float = 1.0,
    progress: bool = False,
) -> Dict[str, Any]:
    """Read the messages, score them with the model, estimate the share and the threshold."""
    from rasa_meta.tooling.bot_model import load_bot_model
    from rasa_meta.tooling.inbox_traffic import parse_time, read_traffic

    if not cost_wrong > 0:
        raise CalibrationError(f"--cost-wrong must be positive, got {cost_wrong!r}.")
    if messages is not None:
        texts = read_messages_file(messages)
        source: Dict[str, Any] = {"messages_file": str(messages)}
    else:
        traffic = read_traffic(Path(endpoints or "endpoints.yml"), parse_time(since),
                               parse_time(until), progress=progress)
        texts = [m.text for m in traffic.messages]
        source = {"tracker_store": traffic.store, "endpoints": str(endpoints),
                  "since": since, "until": until, "conversations": traffic.conversations}
    bot = load_bot_model(model)
    # repeats are scored once and counted as often as they were sent
    distinct = sorted(set(texts))
    index = {t: i for i, t in enumerate(distinct)}
    z_distinct, _ = message_logits(bot.classifier.model, distinct)
    z = z_distinct[[index[t] for t in texts]]
    return {"model": bot.path, **source,
            **share_report(bot.classifier.model, z, cost_wrong, bot.threshold)}


# --- config.yml ------------------------------------------------------------------------------

_ITEM = re.compile(r"^(\s*)-\s")
_NAME = re.compile(r"""(^|[\s{,-])name:\s*["']?FallbackClassifier["']?\s*([,}#]|$)""")
_THRESHOLD = re.compile(r"""^(?P<head>(\s*-?\s*)threshold:\s*)(?P<value>[^\s#,}]+)(?P<tail>.*)$""")
_INLINE_THRESHOLD = re.compile(r"(threshold:\s*)([^\s#,}]+)")


def set_fallback_threshold(text: str, threshold: float) -> str:
    """config.yml's text with the FallbackClassifier's threshold set; every other line as
    it was. A FallbackClassifier without a threshold line gets one after its name."""
    lines = text.splitlines(keepends=True)
    value = f"{threshold:.2f}"
    for start, line in enumerate(lines):
        item = _ITEM.match(line)
        if not item:
            continue
        indent = len(item.group(1))
        end = start + 1
        while end < len(lines):
            stripped = lines[end].strip()
            if stripped and not stripped.startswith("#"):
                if len(lines[end]) - len(lines[end].lstrip()) <= indent:
                    break
            end += 1
        block = range(start, end)
        if not any(_NAME.search(lines[i].split("#", 1)[0]) for i in block):
            continue
        if "{" in line:  # flow style: - {name: FallbackClassifier, threshold: 0.4}
            if _INLINE_THRESHOLD.search(line):
                lines[start] = _INLINE_THRESHOLD.sub(lambda m: m.group(1) + value, line, 1)
            else:
                lines[start] = line.replace("}", f", threshold: {value}}}", 1)
            return "".join(lines)
        for i in block:
            found = _THRESHOLD.match(lines[i].rstrip("\r\n"))
            if found:
                newline = lines[i][len(lines[i].rstrip("\r\n")):]
                lines[i] = found.group("head") + value + found.group("tail") + newline
                return "".join(lines)
        name_line = next(i for i in block if _NAME.search(lines[i].split("#", 1)[0]))
        newline = "\r\n" if lines[name_line].endswith("\r\n") else "\n"
        if not lines[name_line].endswith(("\n", "\r")):
            lines[name_line] += newline
        lines.insert(name_line + 1, " " * (indent + 2) + f"threshold: {value}{newline}")
        return "".join(lines)
    raise CalibrationError("the config has no FallbackClassifier in its pipeline: add "
                           "'- name: FallbackClassifier' after the intent classifier, then "
                           "run calibrate --write again.")


def write_threshold(config: Path, threshold: float) -> None:
    """Set the FallbackClassifier threshold in ``config`` and check that nothing else moved."""
    import yaml

    try:
        raw = config.read_bytes()
        text = raw.decode("utf-8")
        before = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CalibrationError(f"cannot read '{config}': {' '.join(str(e).split())}") from e
    updated = set_fallback_threshold(text, threshold)
    after = yaml.safe_load(updated)
    if _without_threshold(after) != _without_threshold(before):
        raise CalibrationError(f"'{config}' is laid out in a way calibrate cannot edit safely: "
                               f"set the FallbackClassifier threshold to {threshold:.2f} by hand.")
    config.write_bytes(updated.encode("utf-8"))


def _without_threshold(config: Any) -> Any:
    """The config with the FallbackClassifier's threshold removed: what must not change."""
    if not isinstance(config, dict):
        return config
    pipeline = [
        {k: v for k, v in step.items() if k != "threshold"}
        if isinstance(step, dict) and step.get("name") == "FallbackClassifier" else step
        for step in config.get("pipeline") or []
    ]
    return {**config, "pipeline": pipeline}
