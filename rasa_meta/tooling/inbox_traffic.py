"""Reading what users said to a bot: the user messages in its tracker store.

The tracker store is the one the bot's ``endpoints.yml`` configures, opened with Rasa's own
``TrackerStore`` classes (SQL with SQLite or PostgreSQL, Redis, MongoDB, DynamoDB or a custom
class), so the inbox reads exactly what ``rasa run`` wrote. Problems a user can act on (no
tracker store configured, a database that cannot be reached, no conversations in the time
window) raise :class:`InboxError` with one line that says what to do.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from rasa_meta.runtime.errors import RasaMetaError
from rasa_meta.tooling.nlu_text import normalise_text

logger = logging.getLogger(__name__)

# Relative windows: "7d", "12h", "30m", "2w".
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Seconds to wait for a database server before saying it cannot be reached: Rasa's
# SQLTrackerStore itself retries forever while a database "comes up".
CONNECT_TIMEOUT = 10
SQL_EVENTS_TABLE = "events"  # SQLTrackerStore.SQLEvent.__tablename__


class InboxError(RasaMetaError):
    """A problem the user can fix; the command prints it as one line and exits with 2."""


@dataclass
class UserMessage:
    """One user message from a tracker, with what the bot recorded about it at the time."""

    sender_id: str
    timestamp: float
    text: str
    recorded_intent: Optional[str] = None
    recorded_confidence: Optional[float] = None
    input_channel: Optional[str] = None
    message_id: Optional[str] = None


@dataclass
class Traffic:
    """The user messages read, and what was left out and why."""

    messages: List[UserMessage]
    store: str  # e.g. "SQLTrackerStore (sqlite: /path/rasa.db)"
    conversations: int  # conversations with at least one message in the window
    conversations_in_store: int
    skipped: Dict[str, int] = field(default_factory=dict)  # reason -> count
    since: Optional[float] = None
    until: Optional[float] = None


def parse_time(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """A UNIX timestamp from ``7d`` / ``12h`` / ``30m`` / ``2w`` (that long before ``now``), an
    ISO date or date-time (``2024-05-01``, ``2024-05-01T14:00``, ``...+02:00``, ``...Z``;
    without a zone it is local time), or a UNIX timestamp. None stays None."""
    if value is None or str(value).strip() == "":
        return None
    value = str(value).strip()
    now = time.time() if now is None else now
    relative = _RELATIVE.match(value)
    if relative:
        return now - float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise InboxError(
            f"cannot read the time '{value}': use an ISO date or date-time (2024-05-01, "
            f"2024-05-01T14:00, 2024-05-01T14:00+02:00) or a span back from now (7d, 12h, 30m)."
        ) from None
    return moment.timestamp()


def format_time(timestamp: Optional[float]) -> str:
    """ISO date-time in UTC, for reports."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def tracker_store_config(endpoints: Path) -> Any:
    """The ``tracker_store`` section of ``endpoints.yml`` as Rasa's ``EndpointConfig``."""
    from rasa.utils.endpoints import read_endpoint_config

    if not endpoints.is_file():
        raise InboxError(
            f"no endpoints file at '{endpoints}': pass the bot's endpoints.yml with --endpoints."
        )
    try:
        config = read_endpoint_config(str(endpoints), "tracker_store")
    except Exception as e:  # YAML errors come as several Rasa / ruamel types
        raise InboxError(f"cannot read '{endpoints}': {_one_line(e)}") from e
    if config is None or not config.type:
        raise InboxError(
            f"'{endpoints}' configures no tracker_store, so the bot keeps conversations in "
            f"memory only and nothing can be read back. Configure a persistent one (e.g. "
            f"'tracker_store: {{type: SQL, dialect: sqlite, db: rasa.db}}'), restart `rasa "
            f"run`, and run the inbox once users have talked to the bot."
        )
    return config


def _sql_url(config: Any) -> Any:
    from rasa.core.tracker_store import SQLTrackerStore

    kwargs = config.kwargs
    return SQLTrackerStore.get_db_url(
        kwargs.get("dialect", "sqlite"), config.url, kwargs.get("port"),
        kwargs.get("db", "rasa.db"), kwargs.get("username"), kwargs.get("password"),
        kwargs.get("login_db"), kwargs.get("query"),
    )


def _resolve_sqlite(config: Any, endpoints: Path) -> None:
    """Point a SQLite tracker store at an existing file, or raise.

    ``rasa run`` opens a relative ``db`` from the directory it was started in, usually the one
    holding endpoints.yml: look there after the current directory. Never create a file: a
    new, empty database would only hide a wrong path.
    """
    db = str(config.kwargs.get("db", "rasa.db"))
    if db in ("", ":memory:"):
        raise InboxError(
            f"the SQLite tracker store in '{endpoints}' is in memory ('{db}'): nothing is kept "
            f"after `rasa run` stops. Set 'db' to a file."
        )
    candidates = [Path(db)] if Path(db).is_absolute() else [Path.cwd() / db,
                                                            endpoints.resolve().parent / db]
    for path in candidates:
        if path.is_file():
            config.kwargs["db"] = str(path.resolve())
            return
    raise InboxError(
        f"no SQLite tracker store at {' or '.join(repr(str(p)) for p in candidates)} (db "
        f"'{db}' from '{endpoints}'). A relative path is relative to where `rasa run` was "
        f"started: run the inbox from there, or set 'db' to an absolute path."
    )


def _check_sql(config: Any, endpoints: Path) -> bool:
    """Connect once with a timeout; False if there is no events table (nothing stored yet).

    Rasa's SQLTrackerStore waits forever for a database that does not answer, so the inbox
    checks first and reports an unreachable database in one line.
    """
    import sqlalchemy as sa
    from rasa.core.tracker_store import create_engine_kwargs

    url = _sql_url(config)
    kwargs = create_engine_kwargs(url)
    if "postgres" in str(url).split(":", 1)[0]:
        kwargs.setdefault("connect_args", {})["connect_timeout"] = CONNECT_TIMEOUT
    try:
        engine = sa.create_engine(url, **kwargs)
        with engine.connect():
            has_events = sa.inspect(engine).has_table(
                SQL_EVENTS_TABLE, schema=_postgres_schema()
            )
        engine.dispose()
    except ModuleNotFoundError as e:
        raise InboxError(
            f"the SQL tracker store in '{endpoints}' needs the database driver '{e.name}': "
            f"install it in this environment (it is the one `rasa run` uses)."
        ) from e
    except Exception as e:  # sqlalchemy.exc.* and DBAPI errors of every driver
        raise InboxError(
            f"cannot reach the SQL tracker store {_describe(config)} configured in "
            f"'{endpoints}': {_one_line(e)}"
        ) from e
    return has_events


def _postgres_schema() -> Optional[str]:
    import os

    from rasa.core.constants import POSTGRESQL_SCHEMA

    return os.environ.get(POSTGRESQL_SCHEMA) or None


def _describe(config: Any) -> str:
    kind = str(config.type)
    if kind.lower() == "sql":
        dialect = config.kwargs.get("dialect", "sqlite")
        if dialect == "sqlite":
            return f"(sqlite: {config.kwargs.get('db', 'rasa.db')})"
        where = config.url or "localhost"
        port = config.kwargs.get("port")
        return f"({dialect}: {where}{':' + str(port) if port else ''}/" \
               f"{config.kwargs.get('db', 'rasa.db')})"
    where = config.url or config.kwargs.get("host") or ""
    port = config.kwargs.get("port")
    return f"({kind}{': ' + str(where) if where else ''}{':' + str(port) if port else ''})"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


@contextmanager
def _quiet_replay() -> Iterator[None]:
    """Rebuilding trackers without the bot's slots logs an error per SlotSet: not a problem
    here (only the user messages are read), so those records are silenced."""
    trackers = logging.getLogger("rasa.shared.core.trackers")
    level = trackers.level
    trackers.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        trackers.setLevel(level)


def open_tracker_store(endpoints: Path) -> Tuple[Any, str, bool]:
    """Rasa's tracker store for ``endpoints.yml``, its description, and whether it can hold
    anything (False: an SQL database without the events table)."""
    from rasa.core.tracker_store import InMemoryTrackerStore, TrackerStore

    config = tracker_store_config(endpoints)
    has_events = True
    if str(config.type).lower() == "sql":
        if config.kwargs.get("dialect", "sqlite") == "sqlite":
            _resolve_sqlite(config, endpoints)
        has_events = _check_sql(config, endpoints)
    description = _describe(config)
    if not has_events:
        return None, description, False
    try:
        store = TrackerStore.create(config)
    except Exception as e:  # ConnectionException, driver and client errors
        raise InboxError(
            f"cannot open the tracker store {description} configured in '{endpoints}': "
            f"{_one_line(e)}"
        ) from e
    inner = getattr(store, "_tracker_store", store)  # AwaitableTrackerStore wraps old stores
    if isinstance(inner, InMemoryTrackerStore):
        raise InboxError(
            f"the tracker store type '{config.type}' in '{endpoints}' could not be loaded, so "
            f"Rasa would fall back to an in-memory store that holds nothing: check 'type' (a "
            f"module path for a custom store)."
        )
    return store, f"{type(inner).__name__} {description}", True


async def _read(store: Any, since: Optional[float], until: Optional[float],
                progress: bool) -> Tuple[List[UserMessage], int, int, Dict[str, int]]:
    from rasa.shared.core.events import UserUttered
    from tqdm.auto import tqdm

    keys = sorted(str(k) for k in await store.keys())
    messages: List[UserMessage] = []
    skipped: Dict[str, int] = {}
    active = 0
    for sender in tqdm(keys, desc="reading conversations", unit="conv", disable=not progress,
                       leave=False):
        tracker = await store.retrieve_full_tracker(sender)
        if tracker is None:
            continue
        found = 0
        for event in tracker.events:
            if not isinstance(event, UserUttered):
                continue
            stamp = float(event.timestamp or 0.0)
            if (since is not None and stamp < since) or (until is not None and stamp >= until):
                continue
            text = (event.text or "").strip()
            if not text:  # intents triggered through the API carry no text
                skipped["no text"] = skipped.get("no text", 0) + 1
                continue
            if text.startswith("/"):  # "/intent" from buttons: not parsed by the NLU model
                skipped["intent shortcut (/intent)"] = skipped.get(
                    "intent shortcut (/intent)", 0) + 1
                continue
            intent = event.intent or {}
            confidence = intent.get("confidence")
            messages.append(UserMessage(
                sender_id=sender, timestamp=stamp, text=" ".join(text.split()),
                recorded_intent=intent.get("name"),
                recorded_confidence=float(confidence) if confidence is not None else None,
                input_channel=event.input_channel, message_id=event.message_id,
            ))
            found += 1
        active += found > 0
    return messages, active, len(keys), skipped


def read_traffic(
    endpoints: Path,
    since: Optional[float] = None,
    until: Optional[float] = None,
    progress: bool = True,
) -> Traffic:
    """Every user message in the tracker store of ``endpoints.yml`` with ``since <= timestamp
    < until``. Raises InboxError when the store cannot be read or holds no such message."""
    endpoints = Path(endpoints)
    if since is not None and until is not None and since >= until:
        raise InboxError(
            f"the time window is empty: --since ({format_time(since)}) is not before --until "
            f"({format_time(until)})."
        )
    store, description, has_events = open_tracker_store(endpoints)
    if not has_events:
        raise InboxError(
            f"the tracker store {description} holds no conversations yet (no events table): "
            f"is `rasa run` using this endpoints.yml ('{endpoints}'), and have users talked "
            f"to the bot?"
        )
    try:
        with _quiet_replay():
            messages, active, total, skipped = asyncio.run(_read(store, since, until, progress))
    except InboxError:
        raise
    except Exception as e:  # the store's client errors (connection refused, auth, ...)
        raise InboxError(
            f"cannot read conversations from the tracker store {description}: {_one_line(e)}"
        ) from e
    if total == 0:
        raise InboxError(
            f"the tracker store {description} holds no conversations: is `rasa run` using "
            f"this endpoints.yml ('{endpoints}'), and have users talked to the bot?"
        )
    if not messages:
        if since is not None and until is not None:
            window = f"between {format_time(since)} and {format_time(until)}"
        elif since is not None:
            window = f"since {format_time(since)}"
        elif until is not None:
            window = f"before {format_time(until)}"
        else:
            window = "at all"
        left_out = (f" ({', '.join(f'{n} {why}' for why, n in skipped.items())} left out)"
                    if skipped else "")
        raise InboxError(
            f"the tracker store {description} holds {total} conversation(s) but no user "
            f"message with text {window}{left_out}: widen --since / --until."
        )
    return Traffic(messages, description, active, total, skipped, since, until)


@dataclass
class DistinctTexts:
    """User messages folded by :func:`normalise_text`: repeats count, are parsed once."""

    texts: List[str]  # the most frequent spelling of each
    message_ids: List[List[int]]  # indices into Traffic.messages
    senders: List[List[str]]

    @property
    def counts(self) -> List[int]:
        return [len(ids) for ids in self.message_ids]


def distinct_texts(traffic: Traffic) -> DistinctTexts:
    groups: Dict[str, List[int]] = {}
    for i, message in enumerate(traffic.messages):
        groups.setdefault(normalise_text(message.text), []).append(i)
    texts, ids, senders = [], [], []
    for members in groups.values():
        spellings: Dict[str, int] = {}
        for i in members:
            spellings[traffic.messages[i].text] = spellings.get(traffic.messages[i].text, 0) + 1
        texts.append(max(spellings, key=lambda s: (spellings[s], -len(s))))
        ids.append(members)
        senders.append(sorted({traffic.messages[i].sender_id for i in members}))
    return DistinctTexts(texts, ids, senders)
