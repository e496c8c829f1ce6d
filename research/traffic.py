"""Constructed traffic for a bot: conversations written straight into a tracker store, or
held with the bot served by ``rasa run``.

``scripts/inbox_benchmark.py`` stores many conversations with :func:`write_tracker_store`;
``scripts/inbox_demo.py`` serves a trained bot (:func:`serve`) and sends it the constructed
traffic of ``tests/data/inbox_traffic.yml`` (:func:`load_traffic`, :func:`conversations`,
:func:`send`). The inbox and calibrate tests use the same functions.
"""

from __future__ import annotations

import asyncio
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
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import yaml

REPO = Path(__file__).resolve().parent.parent
TRAFFIC = REPO / "tests" / "data" / "inbox_traffic.yml"
DB_NAME = "tracker.db"

# (text, recorded intent, recorded confidence, timestamp)
Turn = Tuple[str, Optional[str], float, float]


def write_tracker_store(db: Path, conversations: Sequence[Sequence[Turn]],
                        progress: bool = True) -> None:
    """Store conversations in a SQLite tracker store through Rasa's SQLTrackerStore."""
    from rasa.core.tracker_store import SQLTrackerStore
    from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, UserUttered
    from rasa.shared.core.trackers import DialogueStateTracker
    from tqdm.auto import tqdm

    store = SQLTrackerStore(dialect="sqlite", db=str(db))

    async def save_all() -> None:
        for n, turns in enumerate(tqdm(conversations, desc="writing conversations",
                                       disable=not progress, leave=False)):
            start = turns[0][3] - 1.0
            events = [ActionExecuted("action_session_start", timestamp=start),
                      SessionStarted(timestamp=start),
                      ActionExecuted("action_listen", timestamp=start)]
            for text, intent, confidence, stamp in turns:
                parse = {"text": text, "intent": {"name": intent, "confidence": confidence},
                         "intent_ranking": [{"name": intent, "confidence": confidence}],
                         "entities": []}
                events += [UserUttered(text, parse["intent"], parse_data=parse,
                                       timestamp=stamp, input_channel="rest"),
                           BotUttered("ok", timestamp=stamp + 0.2),
                           ActionExecuted("action_listen", timestamp=stamp + 0.3)]
            await store.save(DialogueStateTracker.from_events(f"user-{n:05d}", events))

    asyncio.run(save_all())
    store.engine.dispose()


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
