"""Time `rasa-meta inbox` over a tracker store of many user messages.

Writes ``--messages`` distinct user messages (default 10,000) in conversations of five into a
SQLite tracker store with Rasa's own SQLTrackerStore, as `rasa run` stores them (session
start, user message with its parse data, bot reply), spread over the last 7 days. Half are
customer-support requests (BITEXT), half everything else (CLINC150 and BANKING77, mostly out
of a shop bot's scope), so that much of it falls back and is clustered. Then it runs the
whole command, `rasa-meta inbox`, in a fresh process and records its wall-clock time:

    python scripts/inbox_benchmark.py --model example_bot/models/<model>.tar.gz \
        --workdir /tmp/inbox-bench --output docs/results/inbox/inbox_benchmark.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rasa_meta.tooling.nlu_text import normalise_text  # noqa: E402
from research.traffic import Turn, write_tracker_store  # noqa: E402


def message_pool(n: int, seed: int) -> List[str]:
    """``n`` distinct texts: half customer-support requests, half from other corpora."""
    from rasa_meta.training.corpus import data_root, load_split

    root = data_root()
    support = load_split(root / "BITEXT" / "train").texts
    other = (load_split(root / "CLINC150" / "test").texts
             + load_split(root / "CLINC150" / "valid").texts
             + load_split(root / "CLINC150" / "oos" / "test").texts
             + load_split(root / "BANKING77" / "test").texts)
    rng = random.Random(seed)
    seen, texts = set(), []
    for pool, quota in ((support, n // 2), (other, n - n // 2)):
        taken = 0
        for text in rng.sample(pool, len(pool)):
            key = normalise_text(text)  # what the inbox counts as one text
            if key in seen:
                continue
            seen.add(key)
            texts.append(text)
            taken += 1
            if taken == quota:
                break
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} distinct texts available, {n} asked for")
    rng.shuffle(texts)
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A trained model (.tar.gz).")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--per-conversation", type=int, default=5)
    parser.add_argument("--workdir", default="/tmp/inbox-bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None,
                        help="Append the timing record to this JSON file.")
    ns = parser.parse_args()
    work = Path(ns.workdir)
    work.mkdir(parents=True, exist_ok=True)
    db = work / "tracker.db"
    if db.exists():
        db.unlink()
    texts = message_pool(ns.messages, ns.seed)
    now = time.time()
    rng = random.Random(ns.seed)
    convs: List[List[Turn]] = []
    for start in range(0, len(texts), ns.per_conversation):
        t0 = now - rng.uniform(60, 7 * 86400)
        convs.append([(text, None, 0.0, t0 + 20.0 * k)
                      for k, text in enumerate(texts[start:start + ns.per_conversation])])
    began = time.perf_counter()
    write_tracker_store(db, convs)
    print(f"wrote {len(texts)} messages in {len(convs)} conversations to {db} in "
          f"{time.perf_counter() - began:.0f} s", flush=True)
    (work / "endpoints.yml").write_text(
        f"tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: {db.resolve()}\n",
        encoding="utf-8")
    load_before = os.getloadavg()
    command = [str(Path(sys.executable).parent / "rasa-meta"), "inbox", "--endpoints",
               str(work / "endpoints.yml"), "--model", ns.model, "--output-dir",
               str(work / "report"), "--since", "8d", "--no-progress"]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"rasa-meta inbox failed ({done.returncode}): {done.stderr[-3000:]}")
    result = json.loads((work / "report" / "inbox.json").read_text(encoding="utf-8"))
    record = {
        "command": "python " + " ".join(sys.argv),
        "inbox_command": " ".join(["rasa-meta"] + command[1:]),
        "messages": result["summary"]["messages"],
        "conversations": result["summary"]["conversations"],
        "distinct_texts": result["summary"]["distinct_texts"],
        "unhandled": result["summary"]["unhandled"],
        "clusters": result["summary"]["clusters"],
        "wall_seconds": round(wall, 1),
        "target_seconds": 120,
        "stages_seconds": result["timings"],
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "stdout": done.stdout.strip().splitlines(),
    }
    print(json.dumps({k: v for k, v in record.items() if k != "stdout"}, indent=1))
    if ns.output:  # one record per run, appended: timings on a shared CPU vary with its load
        out = Path(ns.output)
        runs = json.loads(out.read_text(encoding="utf-8"))["runs"] if out.is_file() else []
        out.write_text(json.dumps({"target": "rasa-meta inbox over 10,000 stored messages in "
                                             "at most 2 minutes on a 2-core CPU",
                                   "runs": runs + [record]}, indent=1) + "\n",
                       encoding="utf-8")


if __name__ == "__main__":
    main()
