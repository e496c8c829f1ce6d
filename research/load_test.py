"""Serving load test: the example bot with rasa-meta vs the same bot with Rasa's DIET pipeline.

For each config the bot is trained with ``rasa train`` into a temporary folder (or a trained
model is reused with ``--model NAME=PATH``), served with ``rasa run --enable-api`` on 127.0.0.1
only, and sent a bounded number of concurrent ``POST /model/parse`` requests that mix held-out
paraphrases (example_bot/tests/nlu_paraphrases.yml) with bad input (empty, 10k characters,
emoji, right-to-left text, control and zero-width characters, a lone surrogate). Reported per
config: requests/s, p50/p99 latency, errors (non-200 or malformed JSON), dropped requests
(sent - answered), the server's peak RSS, and whether it stopped cleanly; as a markdown table on
stdout and as JSON (``--output``).

    .venv/bin/python scripts/load_test.py                      # both configs, default bounds
    .venv/bin/python scripts/load_test.py --configs meta --requests 100
    .venv/bin/python scripts/load_test.py --model meta=models/meta.tar.gz --model diet=...

``--concurrency 1 8 32`` measures each value in turn on the same server; ``--cpu-load idle busy``
repeats that with one spinning process per core running during each measurement (``busy``).
Each row records config, scenario, concurrency and rasa-meta's ``num_threads`` setting.

Bounds: ``--requests`` (400) at ``--concurrency`` (16); ``--timeout`` (600 s) limits each
measurement (the first also covers the server's start); ``--train-timeout`` (1800 s)
limits each ``rasa train``. Nothing listens on or connects to anything but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
BOT = REPO / "example_bot"
PARAPHRASES = BOT / "tests" / "nlu_paraphrases.yml"
HOST = "127.0.0.1"

BAD_INPUTS: Dict[str, str] = {
    "empty": "",
    "whitespace": " \n\t ",
    "10k_chars": "where is my order " * 600,
    "emoji": "😀🔥👍🏽 🇺🇸 where is my 📦?",
    "rtl": "أين طلبي؟ איפה ההזמנה שלי?",
    "control": "\x00\x01\x07\x1b[31mhello\x1b[0m\x7f",
    "zero_width": "re\u200bfund\u200c\u200d\ufeff please",
    "lone_surrogate": "\ud800 hello",
    "intent_shortcut": "/greet",
}


def diet_pipeline(retrieval_intents: bool) -> List[Dict[str, Any]]:
    """Rasa's default NLU pipeline, as the benchmark defines it, plus the bot's extras."""
    import yaml

    from rasa_meta.tooling.benchmark import DIET_PIPELINE

    pipeline: List[Dict[str, Any]] = yaml.safe_load(DIET_PIPELINE)
    pipeline.append({"name": "EntitySynonymMapper"})
    if retrieval_intents:  # ResponseSelector only has something to learn from faq/... intents
        pipeline.append({"name": "ResponseSelector", "epochs": 100})
    return pipeline


def make_configs(encoder: Optional[str]) -> Dict[str, Dict[str, Any]]:
    """The example bot's config.yml with rasa-meta, and the same with DIET instead.

    Both keep the bot's policies and its FallbackClassifier."""
    import yaml

    base = yaml.safe_load((BOT / "config.yml").read_text(encoding="utf-8"))
    fallback = [c for c in base["pipeline"] if c.get("name") == "FallbackClassifier"]
    meta = json.loads(json.dumps(base))
    if encoder:
        for component in meta["pipeline"]:
            if component.get("name") == "rasa_meta.MetaIntentClassifier":
                component["encoder"] = encoder
    nlu = (BOT / "data" / "nlu.yml").read_text(encoding="utf-8")
    retrieval = any(
        "/" in line.split("intent:", 1)[1] for line in nlu.splitlines() if "intent:" in line
    )
    diet = json.loads(json.dumps(base))
    diet["assistant_id"] = f"{base.get('assistant_id', 'bot')}-diet"
    diet["pipeline"] = diet_pipeline(retrieval) + fallback
    return {"meta": meta, "diet": diet}


def default_encoder() -> Optional[str]:
    """None when the shipped meta-trained encoder exists (the config's default is used);
    otherwise the bundled base encoder, so the test runs before an encoder is shipped."""
    if (REPO / "rasa_meta" / "default_encoder").is_dir():
        return None
    return "sentence-transformers/all-MiniLM-L6-v2"


# --- statistics (pure functions, tested in tests/research/test_load_test.py) ----------------


@dataclass
class Result:
    """One request: the HTTP status (None if no answer), latency, and what went wrong."""

    kind: str  # "paraphrase" or the BAD_INPUTS key
    status: Optional[int] = None
    latency_s: float = 0.0
    well_formed: bool = False
    intent: Optional[str] = None
    expected: Optional[str] = None
    error: Optional[str] = None

    @property
    def answered(self) -> bool:
        return self.status is not None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.well_formed


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between ranks; NaN if empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * min(max(q, 0.0), 100.0) / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def well_formed_parse(payload: Any) -> Tuple[bool, Optional[str]]:
    """Is this a /model/parse answer (an intent dict with a name and a confidence in [0, 1])?"""
    if not isinstance(payload, dict) or not isinstance(payload.get("intent"), dict):
        return False, None
    intent = payload["intent"]
    name, confidence = intent.get("name"), intent.get("confidence")
    if name is not None and not isinstance(name, str):
        return False, None
    if confidence is None and name is None:  # Rasa's answer when no classifier ran
        return True, None
    if not isinstance(confidence, (int, float)) or not 0.0 <= float(confidence) <= 1.0:
        return False, name
    return True, name


def summarise(results: Sequence[Result], sent: int, wall_s: float) -> Dict[str, Any]:
    """Throughput, latency percentiles (answered requests), errors and drops."""
    answered = [r for r in results if r.answered]
    latencies_ms = [r.latency_s * 1000.0 for r in answered]
    errors = [r for r in answered if not r.ok]
    paraphrases = [r for r in answered if r.expected is not None and r.ok]
    bad = [r for r in results if r.kind != "paraphrase"]
    return {
        "sent": sent,
        "answered": len(answered),
        "dropped": sent - len(answered),
        "errors": len(errors),
        "non_200": sum(1 for r in answered if r.status != 200),
        "malformed": sum(1 for r in answered if r.status == 200 and not r.well_formed),
        "bad_inputs_sent": len(bad),
        "bad_inputs_ok": sum(1 for r in bad if r.ok),
        "wall_s": round(wall_s, 3),
        "requests_per_s": round(len(answered) / wall_s, 2) if wall_s > 0 else float("nan"),
        "latency_ms": {
            "p50": round(percentile(latencies_ms, 50), 1),
            "p99": round(percentile(latencies_ms, 99), 1),
            "mean": round(sum(latencies_ms) / len(latencies_ms), 1) if latencies_ms else None,
            "max": round(max(latencies_ms), 1) if latencies_ms else None,
        },
        "paraphrase_accuracy": round(
            sum(r.intent == r.expected for r in paraphrases) / len(paraphrases), 3
        ) if paraphrases else None,
        "error_examples": sorted({f"{r.kind}: {r.status} {r.error or ''}".strip()
                                  for r in results if not r.ok})[:10],
    }


def request_plan(
    n: int, paraphrases: Sequence[Tuple[str, str]], bad_every: int = 5, seed: int = 0
) -> List[Tuple[str, str, Optional[str]]]:
    """``n`` requests as (kind, text, expected intent): every ``bad_every``-th is bad input
    (cycling through BAD_INPUTS), the rest are paraphrases in a seeded random order."""
    rng = random.Random(seed)
    bad = list(BAD_INPUTS.items())
    plan: List[Tuple[str, str, Optional[str]]] = []
    for i in range(n):
        if bad_every and i % bad_every == bad_every - 1:
            kind, text = bad[(i // bad_every) % len(bad)]
            plan.append((kind, text, None))
        else:
            text, intent = paraphrases[rng.randrange(len(paraphrases))]
            plan.append(("paraphrase", text, intent))
    return plan


async def run_load(
    url: str,
    plan: Sequence[Tuple[str, str, Optional[str]]],
    concurrency: int = 16,
    request_timeout_s: float = 60.0,
    deadline: Optional[float] = None,
) -> Tuple[List[Result], int, float]:
    """Send ``plan`` as ``POST url`` with at most ``concurrency`` requests in flight.

    Returns (results of the requests sent, number sent, wall seconds). Requests not started
    before ``deadline`` (a time.monotonic() value) are not sent; one that gets no answer within
    ``request_timeout_s`` (or the deadline) counts as dropped."""
    import aiohttp

    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    results: List[Result] = []
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                kind, text, expected = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            left = request_timeout_s
            if deadline is not None:
                left = min(left, deadline - time.monotonic())
                if left <= 0:
                    return
            result = Result(kind=kind, expected=expected)
            results.append(result)
            start = time.perf_counter()
            try:
                async with session.post(
                    url, json={"text": text}, timeout=aiohttp.ClientTimeout(total=left)
                ) as response:
                    body = await response.read()
                    result.status = response.status
                    result.latency_s = time.perf_counter() - start
                    try:
                        payload = json.loads(body)
                    except ValueError:
                        result.error = "malformed JSON"
                    else:
                        result.well_formed, result.intent = well_formed_parse(payload)
                        if not result.well_formed:
                            result.error = "not a parse result"
            except asyncio.TimeoutError:
                result.error = "timeout"
            except aiohttp.ClientError as e:
                if result.status is None:
                    result.error = f"{type(e).__name__}"
                else:  # the body broke off after the status line
                    result.status, result.error = None, f"{type(e).__name__} mid-body"

    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(max(1, concurrency))))
    return results, len(results), time.perf_counter() - start


# --- training and serving -----------------------------------------------------------------


OMP_THREADS: Optional[int] = None  # --omp-threads: OMP_NUM_THREADS for `rasa train`/`rasa run`


def rasa_env(workdir: Path) -> Dict[str, str]:
    extra = {"OMP_NUM_THREADS": str(OMP_THREADS)} if OMP_THREADS else {}
    return {
        **os.environ,
        **extra,
        "RASA_TELEMETRY_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RASA_CACHE_DIRECTORY": str(workdir / ".rasa-cache"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def rasa_bin() -> str:
    candidate = Path(sys.executable).parent / "rasa"
    return str(candidate) if candidate.exists() else "rasa"


def train_bot(name: str, config: Dict[str, Any], workdir: Path, timeout_s: float) -> Path:
    """Copy the example bot with ``config`` into ``workdir/name`` and ``rasa train`` it."""
    import yaml

    bot = workdir / name
    if bot.exists():
        shutil.rmtree(bot)
    bot.mkdir(parents=True)
    shutil.copytree(BOT / "data", bot / "data")
    shutil.copy(BOT / "domain.yml", bot / "domain.yml")
    (bot / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    log = bot / "train.log"
    with log.open("w") as out:
        done = subprocess.run(
            [rasa_bin(), "train", "--fixed-model-name", name, "--out", "models"],
            cwd=bot, env=rasa_env(workdir), stdout=out, stderr=subprocess.STDOUT,
            timeout=timeout_s,
        )
    if done.returncode != 0:
        raise RuntimeError(f"rasa train ({name}) failed:\n{_tail(log)}")
    return bot / "models" / f"{name}.tar.gz"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def peak_rss_mb(pid: int) -> Optional[float]:
    """VmHWM (peak resident set) of a process and its children, in MiB (Linux /proc)."""
    total_kb, found = 0, False
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kb += int(line.split()[1])
                    found = True
        except OSError:
            continue
    return round(total_kb / 1024.0, 1) if found else None


def _children(pid: int) -> List[int]:
    out: List[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in map(int, kids):
            out += [kid, *_children(kid)]
    return out


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class RasaServer:
    """``rasa run --enable-api`` on 127.0.0.1 as a subprocess, stopped on exit."""

    def __init__(self, model: Path, workdir: Path, port: int) -> None:
        self.model, self.workdir, self.port = model, workdir, port
        self.log = workdir / f"server-{port}.log"
        self.process: Optional[subprocess.Popen] = None
        self.exit_code: Optional[int] = None
        self.stopped_cleanly = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self._out = self.log.open("w")
        self.process = subprocess.Popen(
            [rasa_bin(), "run", "--enable-api", "-i", HOST, "--port", str(self.port),
             "-m", str(self.model)],
            cwd=self.workdir, env=rasa_env(self.workdir), stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, deadline: float) -> float:
        """Poll GET /status until the model is loaded; returns the seconds it took."""
        import aiohttp

        assert self.process is not None
        start = time.monotonic()
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"rasa run exited with {self.process.returncode}:\n{_tail(self.log)}"
                    )
                try:
                    async with session.get(
                        f"{self.url}/status", timeout=aiohttp.ClientTimeout(total=5)
                    ) as r:
                        if r.status == 200 and (await r.json()).get("model_file"):
                            return time.monotonic() - start
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                    pass
                await asyncio.sleep(1.0)
        raise TimeoutError(f"rasa run did not answer /status in time:\n{_tail(self.log)}")

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGINT (Sanic shuts down gracefully), then SIGTERM, then SIGKILL."""
        if self.process is None:
            return
        for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            if self.process.poll() is not None:
                break
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            self.stopped_cleanly = sig == signal.SIGINT
            break
        self.exit_code = self.process.poll()
        self._out.close()


async def measure(
    server: RasaServer,
    plan: Sequence[Tuple[str, str, Optional[str]]],
    concurrency: int,
    deadline: float,
    warmup: int = 5,
    request_timeout_s: float = 60.0,
) -> Dict[str, Any]:
    """Wait for the server, warm it up, run the load, and summarise (server left running)."""
    assert server.process is not None
    ready_s = await server.wait_ready(deadline)
    warm = [("paraphrase", text, None) for _, text, _ in plan[:warmup]]
    await run_load(f"{server.url}/model/parse", warm, 1, request_timeout_s, deadline)
    rss_before = peak_rss_mb(server.process.pid)
    results, sent, wall = await run_load(
        f"{server.url}/model/parse", plan, concurrency, request_timeout_s, deadline
    )
    summary = summarise(results, sent, wall)
    summary["planned"] = len(plan)
    summary["not_sent"] = len(plan) - sent  # the deadline came first
    summary["startup_s"] = round(ready_s, 1)
    summary["rss_after_warmup_mb"] = rss_before
    summary["peak_rss_mb"] = peak_rss_mb(server.process.pid)
    summary["server_alive_after_load"] = server.process.poll() is None
    return summary


SCENARIOS = ("idle", "busy")
BURN = "import time\nwhile True:\n    sum(i * i for i in range(10000))\n"


class CpuBurner:
    """``busy`` scenario: one spinning ``python -c`` process per core, so the server shares the
    machine like a real one; ``idle``: nothing. Stopped (killed) on exit, always."""

    def __init__(self, scenario: str, processes: Optional[int] = None) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}, expected one of {SCENARIOS}")
        self.scenario = scenario
        self.n = (processes or os.cpu_count() or 1) if scenario == "busy" else 0
        self.processes: List[subprocess.Popen] = []

    def __enter__(self) -> CpuBurner:
        try:
            for _ in range(self.n):
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-c", BURN],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        for process in self.processes:
            process.wait(timeout=10)
        self.processes = []


def serve_and_measure(
    model: Path,
    workdir: Path,
    plan: Sequence[Tuple[str, str, Optional[str]]],
    concurrency: int,
    timeout_s: float,
) -> Dict[str, Any]:
    """Start a server for ``model``, measure, stop it; bounded by ``timeout_s`` overall."""
    return serve_and_measure_all(model, workdir, plan, [("idle", concurrency)], timeout_s)[0]


def serve_and_measure_all(
    model: Path,
    workdir: Path,
    plan: Sequence[Tuple[str, str, Optional[str]]],
    runs: Sequence[Tuple[str, int]],
    timeout_s: float,
) -> List[Dict[str, Any]]:
    """One server for ``model``, one measurement per (scenario, concurrency) in ``runs``, each
    bounded by ``timeout_s`` (the first also covers the server's start); then stop it."""
    server = RasaServer(model, workdir, free_port())
    server.start()
    summaries: List[Dict[str, Any]] = []
    try:
        for scenario, concurrency in runs:
            deadline = time.monotonic() + timeout_s
            with CpuBurner(scenario):
                summary = asyncio.run(measure(server, plan, concurrency, deadline))
            summary.update(scenario=scenario, concurrency=concurrency)
            summaries.append(summary)
    finally:
        server.stop()
    for summary in summaries:
        summary["stopped_cleanly"] = server.stopped_cleanly
        summary["server_exit_code"] = server.exit_code
    return summaries


# --- report --------------------------------------------------------------------------------


def markdown_table(rows: Dict[str, Dict[str, Any]]) -> str:
    header = (
        "| config | scenario | requests | concurrency | req/s | p50 ms | p99 ms | errors | dropped "
        "| bad inputs ok | paraphrase acc. | peak RSS MiB | startup s | stopped cleanly |"
    )
    columns = header.count("|") - 1
    lines = [header, "|" + "---|" * columns]
    for name, s in rows.items():
        if "sent" not in s:
            error = s.get("error", "no result").splitlines()[0][:80].replace("|", "/")
            lines.append(f"| {name} | failed: {error} |" + " |" * (columns - 2))
            continue
        acc = s.get("paraphrase_accuracy")
        lines.append(
            f"| {s.get('config', name)} | {s.get('scenario', 'idle')} | "
            f"{s['sent']}/{s['planned']} | {s['concurrency']} | "
            f"{s['requests_per_s']} | {s['latency_ms']['p50']} | {s['latency_ms']['p99']} | "
            f"{s['errors']} | {s['dropped']} | {s['bad_inputs_ok']}/{s['bad_inputs_sent']} | "
            f"{'-' if acc is None else f'{acc:.1%}'} | {s['peak_rss_mb']} | {s['startup_s']} | "
            f"{'yes' if s.get('stopped_cleanly') else 'no'} |"
        )
    return "\n".join(lines)


def meta_num_threads(config: Dict[str, Any]) -> Any:
    """The rasa-meta component's ``num_threads`` setting (its default: ``auto``)."""
    for component in config.get("pipeline", []):
        if component.get("name") == "rasa_meta.MetaIntentClassifier":
            return component.get("num_threads", "auto")
    return None


def load_paraphrases() -> List[Tuple[str, str]]:
    from rasa_meta.training.corpus import load_rasa_nlu

    corpus = load_rasa_nlu(PARAPHRASES)
    return list(zip(corpus.texts, corpus.labels))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["meta", "diet"], choices=["meta", "diet"])
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                   help="reuse a trained model for config NAME instead of training it")
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, nargs="+", default=[16],
                   help="clients in flight; several values give one measurement each")
    p.add_argument("--cpu-load", nargs="+", default=["idle"], choices=list(SCENARIOS),
                   help="busy: one spinning process per core during each measurement")
    p.add_argument("--bad-every", type=int, default=5,
                   help="every N-th request is bad input (0: none)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds for serving + measuring each config (start to stop)")
    p.add_argument("--train-timeout", type=float, default=1800.0,
                   help="seconds for each `rasa train`")
    p.add_argument("--encoder", default=None,
                   help="encoder for the rasa-meta config (default: the config's own, or the "
                        "bundled all-MiniLM-L6-v2 while no meta-trained encoder is shipped)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where bots are trained and logs go (default: a temp dir, removed)")
    p.add_argument("--output", type=Path, default=Path("load_test_results.json"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--omp-threads", type=int, default=None,
                   help="set OMP_NUM_THREADS (torch's intra-op threads) for training and "
                        "serving; 1 avoids thread contention on a busy CPU")
    args = p.parse_args(argv)
    if args.requests < 1 or args.requests > 100_000 or min(args.concurrency) < 1:
        p.error("--requests must be 1..100000 and --concurrency >= 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    global OMP_THREADS
    args = parse_args(argv)
    OMP_THREADS = args.omp_threads
    models = dict(m.split("=", 1) for m in args.model)
    encoder = args.encoder or default_encoder()
    configs = make_configs(encoder)
    plan = request_plan(args.requests, load_paraphrases(), args.bad_every, args.seed)
    keep = args.workdir is not None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rasa-meta-load-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: Dict[str, Dict[str, Any]] = {}
    runs = [(scenario, c) for scenario in args.cpu_load for c in args.concurrency]
    try:
        for name in args.configs:
            base: Dict[str, Any] = {"config": name, "num_threads": meta_num_threads(
                configs[name]) if name == "meta" else None}
            try:
                if name in models:
                    model = Path(models[name]).resolve()
                else:
                    print(f"[{name}] rasa train ...", file=sys.stderr, flush=True)
                    start = time.monotonic()
                    model = train_bot(name, configs[name], workdir, args.train_timeout)
                    base["train_s"] = round(time.monotonic() - start, 1)
                print(f"[{name}] serving {model} ...", file=sys.stderr, flush=True)
                for summary in serve_and_measure_all(model, workdir, plan, runs, args.timeout):
                    key = f"{name}/{summary['scenario']}/c{summary['concurrency']}"
                    rows[key] = {**base, **summary}
                    print(f"[{key}] {summary['requests_per_s']} req/s", file=sys.stderr,
                          flush=True)
            except Exception as e:  # report the failure, go on with the next config
                base["error"] = f"{type(e).__name__}: {e}"
                print(f"[{name}] failed: {base['error'][-2000:]}", file=sys.stderr)
                rows[f"{name}/failed"] = base
            for row in rows.values():
                if row.get("config") == name:
                    row["pipeline"] = [c.get("name") for c in configs[name]["pipeline"]]
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "machine": {
            "cpu_cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "encoder": encoder or "default",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "cpu_load": args.cpu_load,
        "bad_every": args.bad_every,
        "omp_num_threads": args.omp_threads or os.environ.get("OMP_NUM_THREADS"),
        "bad_inputs": list(BAD_INPUTS),
        "results": rows,
    }
    table = markdown_table(rows)
    print(table)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nJSON: {args.output}", file=sys.stderr)
    return 0 if all("error" not in r for r in rows.values()) else 1

