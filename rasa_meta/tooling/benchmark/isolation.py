"""One child process per method run ("spawn"): its peak RSS is its own, and TensorFlow's
memory is given back between methods. ``run_isolated`` runs a job there (or, for debugging,
in this process) and returns its result, or the error it ended with."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Dict

from rasa_meta.tooling.benchmark.methods import peak_rss_mb, run_job

logger = logging.getLogger(__name__)


def quiet_child_env(workdir: Path) -> None:
    # A fresh Rasa cache per run: a cache hit would skip training and fake the train time.
    os.environ["RASA_CACHE_DIRECTORY"] = str(workdir / "rasa-cache")
    os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _child_main(job: Dict[str, Any], result_file: str, log_file: str | None) -> None:
    """Entry point of a spawned child: run one job, write its result as JSON."""
    if log_file:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    workdir = Path(result_file).parent
    quiet_child_env(workdir)
    try:
        result = run_job(job, workdir)
        result.setdefault("peak_rss_mb", peak_rss_mb())
    except Exception as e:  # reported in the row, the benchmark goes on
        traceback.print_exc()
        result = {"error": f"{type(e).__name__}: {e}"}
    Path(result_file).write_text(json.dumps(result), encoding="utf-8")
    sys.stdout.flush()
    sys.stderr.flush()


def run_isolated(job: Dict[str, Any], workdir: Path, log_file: Path | None,
                  isolate: bool) -> Dict[str, Any]:
    result_file = workdir / "result.json"
    if isolate:
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=_child_main,
                           args=(job, str(result_file), str(log_file) if log_file else None))
        proc.start()
        proc.join()
        if not result_file.is_file():
            return {"error": f"child process exited with code {proc.exitcode} (killed, out of "
                             f"memory?); see {log_file or 'its output'}"}
    else:  # in this process: peak RSS is then the whole process's so far
        saved = os.environ.get("RASA_CACHE_DIRECTORY")
        quiet_child_env(workdir)
        try:
            result = run_job(job, workdir)
            result.setdefault("peak_rss_mb", peak_rss_mb())
        except Exception as e:
            logger.exception("benchmark job %s failed", job["method"])
            result = {"error": f"{type(e).__name__}: {e}"}
        finally:
            if saved is None:
                os.environ.pop("RASA_CACHE_DIRECTORY", None)
            else:
                os.environ["RASA_CACHE_DIRECTORY"] = saved
        return result
    return json.loads(result_file.read_text(encoding="utf-8"))
