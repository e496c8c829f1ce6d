"""A short scripted conversation with the trained example bot.

Prints, for each user message, the intent rasa-meta predicted (with its confidence) and the
bot's replies. Run from inside example_bot/ after `rasa train`:

    python converse.py [path/to/model.tar.gz]
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from rasa.core.agent import Agent
from rasa.model import get_latest_model
from rasa.utils.common import configure_logging_and_warnings
from rasa.utils.log_utils import configure_structlog

SCRIPT = [
    "hi there",
    "my parcel still hasn't shown up, where is it?",
    "I'd like to cancel the order I placed yesterday",
    "yes please",
    "what sizes do your sneakers run in?",
    "is there any discount for students?",
    "my card keeps getting declined at checkout",
    "asdf qwerty zzz",
    "what's the capital of peru",
    "what's your name?",
    "thanks for your help",
    "bye",
]


async def converse(model_path: str) -> None:
    # quiet like the `rasa` command: only the conversation on stdout
    configure_logging_and_warnings(logging.WARNING)
    configure_structlog(logging.WARNING)
    agent = Agent.load(model_path)
    sender = "demo-user"
    for text in SCRIPT:
        parse = await agent.parse_message(text)
        intent = parse["intent"]
        replies = await agent.handle_text(text, sender_id=sender)
        print(f"\nuser > {text}")
        print(f"        intent: {intent['name']} ({intent['confidence']:.2f})")
        for reply in replies or []:
            print(f"bot  > {reply.get('text', reply)}")


def main() -> None:
    here = Path(__file__).resolve().parent
    model = sys.argv[1] if len(sys.argv) > 1 else get_latest_model(str(here / "models"))
    if not model:
        sys.exit("No trained model in example_bot/models: run `rasa train` first.")
    asyncio.run(converse(str(model)))


if __name__ == "__main__":
    main()
