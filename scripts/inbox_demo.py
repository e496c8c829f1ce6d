"""Serve a trained bot with `rasa run` and a SQLite tracker store, and talk to it.

Sends the constructed traffic of ``tests/data/inbox_traffic.yml`` (in-scope requests,
out-of-scope messages and paraphrases of an intent the bot lacks) over the REST channel, one
conversation per sender, then stops the server. The tracker store is then ready for
``rasa-meta inbox``:

    python scripts/inbox_demo.py --model example_bot/models/<model>.tar.gz --workdir inbox-demo
    rasa-meta inbox --endpoints inbox-demo/endpoints.yml \
        --model example_bot/models/<model>.tar.gz --output-dir inbox-demo/report

After the author merged the draft and retrained, ``--evaluate out.json`` parses paraphrases
of the missing intent that were never sent, and example_bot's held-out test messages.

The serving and conversation helpers are ``research/traffic.py``'s (tests/test_inbox.py uses
them too).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from research.traffic import (  # noqa: E402
    DB_NAME,
    TRAFFIC,
    conversations,
    free_port,
    load_traffic,
    send,
    serve,
    write_endpoints,
)


def evaluate(model: Path, traffic: Dict, intent: str) -> Dict:
    """What the bot makes of: the missing intent's held-out paraphrases (never sent, never
    drafted), example_bot's held-out in-scope paraphrases, and its off-topic messages."""
    import asyncio

    from rasa.core.agent import Agent

    from rasa_meta.training.corpus import load_rasa_nlu

    agent = Agent.load(str(model))

    def names(texts: List[str]) -> List[str]:
        async def parse_all() -> List[str]:
            return [(await agent.parse_message(t))["intent"]["name"] for t in texts]
        return asyncio.run(parse_all())

    bot_tests = REPO / "example_bot" / "tests"
    held = traffic["missing_intent_held_out"]
    paraphrases = load_rasa_nlu(bot_tests / "nlu_paraphrases.yml")
    off_topic = [t for t in (bot_tests / "oos_messages.txt").read_text().splitlines() if t]
    held_names = names(held)
    para_names = names(paraphrases.texts)
    oos_names = names(off_topic)
    return {
        "model": str(model),
        "missing_intent": intent,
        "held_out_missing_intent": {
            "messages": len(held),
            "recognised": sum(n == intent for n in held_names),
            "predictions": dict(zip(held, held_names)),
        },
        "in_scope_paraphrases": {
            "messages": len(paraphrases.texts),
            "accuracy": round(sum(p == g for p, g in zip(para_names, paraphrases.labels))
                              / len(para_names), 4),
        },
        "off_topic": {"messages": len(off_topic),
                      "fell_back": sum(n == "nlu_fallback" for n in oos_names)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A trained model (.tar.gz).")
    parser.add_argument("--workdir", default="inbox-demo",
                        help="Where endpoints.yml, credentials.yml and the SQLite tracker "
                             "store are written.")
    parser.add_argument("--traffic", default=str(TRAFFIC))
    parser.add_argument("--port", type=int, default=0, help="0: a free one.")
    parser.add_argument("--evaluate", metavar="JSON", default=None,
                        help="Instead of sending traffic: parse the held-out messages with "
                             "the model and write the counts to this file.")
    ns = parser.parse_args()
    traffic = load_traffic(Path(ns.traffic))
    if ns.evaluate:
        report = evaluate(Path(ns.model), traffic, traffic["missing_intent_name"])
        Path(ns.evaluate).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(json.dumps({k: v for k, v in report.items()}, indent=1))
        return
    workdir = Path(ns.workdir)
    write_endpoints(workdir)
    convs = conversations(traffic)
    with serve(Path(ns.model), workdir, ns.port or free_port()) as port:
        records = send(port, convs)
    (workdir / "conversations.json").write_text(json.dumps(records, indent=1),
                                               encoding="utf-8")
    print(f"{len(records)} messages in {len(convs)} conversations sent; tracker store: "
          f"{workdir / DB_NAME}")

if __name__ == "__main__":
    main()
