"""The serving load test (``research/load_test.py``, run by ``scripts/load_test.py``): its
request plan and statistics, the load loop against a local fake server, its options and CPU
burner, and (slow) a real `rasa run` of a tiny-encoder bot."""

from __future__ import annotations

import math
import shutil
import subprocess

import pytest

import research.load_test as lt
from tests.conftest import REPO


def test_percentile_interpolates_between_ranks():
    values = list(range(1, 101))
    assert lt.percentile(values, 50) == pytest.approx(50.5)
    assert lt.percentile(values, 99) == pytest.approx(99.01)
    assert lt.percentile(values, 100) == 100 and lt.percentile(values, 0) == 1
    assert lt.percentile([7.0], 99) == 7.0
    assert math.isnan(lt.percentile([], 50))


@pytest.mark.parametrize(
    "payload, ok",
    [
        ({"intent": {"name": "greet", "confidence": 0.9}}, True),
        ({"intent": {"name": None, "confidence": 0.0}}, True),
        ({"intent": {"name": None, "confidence": None}}, True),
        ({"intent": {"name": "greet", "confidence": 1.5}}, False),
        ({"intent": {"name": "greet", "confidence": "high"}}, False),
        ({"intent": {"name": 3, "confidence": 0.5}}, False),
        ({"intent": "greet"}, False),
        ([], False),
    ],
)
def test_well_formed_parse(payload, ok):
    assert lt.well_formed_parse(payload)[0] is ok


def test_request_plan_mixes_bad_inputs_in():
    plan = lt.request_plan(400, [("hi", "greet"), ("bye", "goodbye")], bad_every=5)
    bad = [kind for kind, _, _ in plan if kind != "paraphrase"]
    assert len(plan) == 400 and len(bad) == 80
    assert set(bad) == set(lt.BAD_INPUTS)
    expected = {e for kind, _, e in plan if kind == "paraphrase"}
    assert expected == {"greet", "goodbye"}
    assert plan == lt.request_plan(400, [("hi", "greet"), ("bye", "goodbye")], bad_every=5)


async def _fake_parse_server_and_load(plan, concurrency, request_timeout_s, deadline_s=None):
    import asyncio
    import time

    from aiohttp import web


    async def parse_handler(request):
        text = (await request.json())["text"]
        if text == "boom":
            return web.json_response({"error": "boom"}, status=500)
        if text == "bad":
            return web.Response(text="{not json", content_type="application/json")
        if text == "wrong":
            return web.json_response({"intent": "greet"})
        if text == "slow":
            await asyncio.sleep(5)
        return web.json_response({"text": text, "intent": {"name": "greet", "confidence": 0.9}})

    app = web.Application()
    app.router.add_post("/model/parse", parse_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    assert host == "127.0.0.1"
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    try:
        return await lt.run_load(
            f"http://{host}:{port}/model/parse", plan, concurrency, request_timeout_s, deadline
        )
    finally:
        await runner.cleanup()


def test_run_load_counts_errors_drops_and_latencies_on_a_local_server():
    import asyncio

    plan = [("paraphrase", "hi", "greet")] * 30 + [("paraphrase", "hello", "goodbye")] * 10
    plan += [("boom", "boom", None), ("bad", "bad", None), ("wrong", "wrong", None)]
    plan += [("slow", "slow", None)] * 2
    results, sent, wall = asyncio.run(_fake_parse_server_and_load(plan, 8, 1.0))
    summary = lt.summarise(results, sent, wall)
    assert sent == len(plan) == 45
    assert summary["answered"] == 43 and summary["dropped"] == 2  # the two slow ones
    assert summary["errors"] == 3
    assert summary["non_200"] == 1 and summary["malformed"] == 2
    assert summary["paraphrase_accuracy"] == pytest.approx(30 / 40)
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]
    assert summary["requests_per_s"] > 0
    assert summary["bad_inputs_sent"] == 5 and summary["bad_inputs_ok"] == 0
    table = lt.markdown_table({"fake": {**summary, "concurrency": 8, "planned": 45,
                                        "peak_rss_mb": 1.0, "startup_s": 0.0}})
    assert table.count("\n") == 2 and "| fake | idle | 45/45 | 8 |" in table


def test_load_test_takes_several_concurrencies_and_cpu_loads():
    args = lt.parse_args(["--concurrency", "1", "8", "32", "--cpu-load", "idle", "busy"])
    assert args.concurrency == [1, 8, 32] and args.cpu_load == ["idle", "busy"]
    assert lt.parse_args([]).concurrency == [16] and lt.parse_args([]).cpu_load == ["idle"]
    with pytest.raises(SystemExit):
        lt.parse_args(["--concurrency", "8", "0"])
    with pytest.raises(SystemExit):
        lt.parse_args(["--cpu-load", "loud"])
    assert lt.meta_num_threads({"pipeline": [{"name": "rasa_meta.MetaIntentClassifier"}]}) == "auto"


def test_busy_cpu_burner_spins_during_the_block_and_is_always_killed():
    with lt.CpuBurner("idle") as idle:
        assert idle.processes == []
    with pytest.raises(RuntimeError):
        with lt.CpuBurner("busy", processes=2) as burner:
            processes = list(burner.processes)
            assert len(processes) == 2 and all(p.poll() is None for p in processes)
            raise RuntimeError("measurement failed")
    assert burner.processes == [] and all(p.poll() is not None for p in processes)
    with pytest.raises(ValueError):
        lt.CpuBurner("loud")


def test_run_load_sends_nothing_after_the_deadline():
    import asyncio

    plan = [("paraphrase", "hi", "greet")] * 20
    results, sent, _ = asyncio.run(_fake_parse_server_and_load(plan, 4, 1.0, deadline_s=0.0))
    assert sent == 0 and results == []


@pytest.mark.slow
def test_load_test_against_a_real_rasa_server(tiny_encoder_dir, tmp_path):
    """`rasa train nlu` a tiny-encoder bot, serve it, load it, stop it: nothing lost."""
    import yaml

    bot = tmp_path / "bot"
    (bot / "data").mkdir(parents=True)
    shutil.copy(REPO / "example_bot" / "data" / "nlu.yml", bot / "data" / "nlu.yml")
    config = {
        "recipe": "default.v1", "language": "en", "assistant_id": "load-test",
        "pipeline": [{"name": "rasa_meta.MetaIntentClassifier", "encoder": str(tiny_encoder_dir)},
                     {"name": "FallbackClassifier", "threshold": 0.4}],
        "policies": [],
    }
    (bot / "config.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [lt.rasa_bin(), "train", "nlu", "--fixed-model-name", "nlu", "--out", "models"],
        cwd=bot, env=lt.rasa_env(tmp_path), capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    plan = lt.request_plan(60, lt.load_paraphrases(), bad_every=3)
    summary = lt.serve_and_measure(bot / "models" / "nlu.tar.gz", tmp_path, plan, 4, 600)
    assert summary["sent"] == 60 and summary["dropped"] == 0 and summary["errors"] == 0
    assert summary["bad_inputs_ok"] == summary["bad_inputs_sent"] == 20
    assert summary["peak_rss_mb"] and summary["stopped_cleanly"]
