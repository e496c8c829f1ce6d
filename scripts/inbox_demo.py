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

tests/test_inbox.py uses the same functions.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import yaml

REPO = Path(__file__).resolve().parent.parent
TRAFFIC = REPO / "tests" / "data" / "inbox_traffic.yml"
DB_NAME = "tracker.db"


def load_traffic(path: Path = TRAFFIC) -> Dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def conversations(traffic: Dict) -> List[List[str]]:
    """One conversation per missing-intent message: an opener, an in-scope request, the
    missing-intent message, an out-of-scope message while any are left, and a closer."""
    convs = []
    for i, text in enumerate(traffic["missing_intent"]):
        conv = [traffic["openers"][i % len(traffic["openers"])],
                traffic["in_scope"][i % len(traffic["in_scope"])], text]
        if i < len(traffic["out_of_scope"]):
            conv.append(traffic["out_of_scope"][i])
        conv.append(traffic["closers"][i % len(traffic["closers"])])
        convs.append(conv)
    # out-of-scope messages beyond the conversations above get conversations of their own
    for j, text in enumerate(traffic["out_of_scope"][len(convs):]):
        convs.append([traffic["openers"][j % len(traffic["openers"])], text])
    return convs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_endpoints(workdir: Path, db: str = DB_NAME) -> Path:
    """endpoints.yml with a SQLite tracker store (``db`` relative to ``workdir``, where
    `rasa run` is started), and credentials.yml with the REST channel."""
    workdir.mkdir(parents=True, exist_ok=True)
    files = {workdir / "endpoints.yml": f"tracker_store:\n  type: SQL\n  dialect: sqlite\n"
                                        f"  db: {db}\n",
             workdir / "credentials.yml": "rest:\n"}
    for path, text in files.items():  # never replace a bot's own files
        if path.exists() and path.read_text(encoding="utf-8") != text:
            raise SystemExit(f"'{path}' exists: pass an empty --workdir.")
        path.write_text(text, encoding="utf-8")
    return workdir / "endpoints.yml"


def _get(url: str, timeout: float = 5.0) -> Tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode("utf-8")


def post_message(port: int, sender: str, text: str) -> List[Dict]:
    """Send one user message over the REST channel; returns the bot's replies."""
    body = json.dumps({"sender": sender, "message": text}).encode("utf-8")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhooks/rest/webhook", data=body,
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read().decode("utf-8"))


@contextmanager
def serve(model: Path, workdir: Path, port: int, timeout: float = 300.0) -> Iterator[int]:
    """`rasa run` on 127.0.0.1:``port`` from ``workdir`` (its endpoints.yml and
    credentials.yml); yields once the REST channel answers, stops the server afterwards."""
    rasa = Path(sys.executable).parent / "rasa"
    env = {**os.environ, "RASA_TELEMETRY_ENABLED": "false"}
    log = open(workdir / "rasa_run.log", "w", encoding="utf-8")
    process = subprocess.Popen(
        [str(rasa), "run", "--model", str(Path(model).resolve()), "--endpoints",
         "endpoints.yml", "--credentials", "credentials.yml", "--port", str(port),
         "--interface", "127.0.0.1"],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"`rasa run` exited with {process.returncode}: "
                                   f"{(workdir / 'rasa_run.log').read_text()[-3000:]}")
            try:
                if _get(f"http://127.0.0.1:{port}/webhooks/rest/")[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"`rasa run` did not answer within {timeout:.0f} s")
            time.sleep(1.0)
        yield port
    finally:
        process.send_signal(signal.SIGINT)  # sanic shuts down cleanly on SIGINT
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def send(port: int, convs: List[List[str]], prefix: str = "user") -> List[Dict]:
    """Hold the conversations; returns one record per message with the bot's replies."""
    records = []
    for n, conv in enumerate(convs):
        sender = f"{prefix}-{n:03d}"
        for text in conv:
            replies = post_message(port, sender, text)
            records.append({"sender": sender, "text": text,
                            "replies": [r.get("text", "") for r in replies]})
    return records


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
