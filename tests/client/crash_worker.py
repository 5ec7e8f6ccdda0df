"""A client process for the crash-safety tests; the test SIGKILLs it at random moments.

``python crash_worker.py MODE REMOTE STORE_URL`` with MODE:

- ``setup``: clone (the server is empty), then queue 300 local writes without pushing;
- ``push``: push until the changelog is empty;
- ``clone``: clone (resuming where a killed run stopped; a finished clone is started over, so
  that most kills land inside a clone), then pull;
- ``finish``: finish a clone that was interrupted, then pull.

Prints one JSON line when the client is open (``{"ready": …}``), one per clone page received
(``{"page": n}``, so that the test can kill it in the middle of a clone whatever the machine's
speed) and one when done.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio

from datafn import Client
from datafn.plugin import hookimpl

SCHEMA = {
    "resources": [
        {
            "name": "items",
            "fields": [
                {"name": "title", "type": "string"},
                {"name": "n", "type": "number"},
            ],
        }
    ]
}

RECORDS = 60
MERGES = 240
#: sync.clone-buffer-pages of the worker: how far the page fetcher may run ahead of the writer
BUFFER_PAGES = 4


def say(**data: object) -> None:
    print(json.dumps(data), flush=True)


class ClonePages:
    """Tells the test about every clone page that arrived (not the count the clone asks for
    its progress, which is a request of the clone phase too)."""

    def __init__(self) -> None:
        self.pages = 0

    @hookimpl
    def datafn_after_sync(self, phase: str, payload: Any, result: Any, context: Any) -> None:
        if phase == "clone" and isinstance(payload, dict) and "page" in payload:
            self.pages += 1
            say(page=self.pages)


async def main(mode: str, remote: str, store: str) -> None:
    async with Client(
        schema=SCHEMA,
        remote=remote,
        store=store,
        client_id="crash-client",
        use_env=False,
        push_batch_size=5,
        retry_base_delay=0.01,
        clone_buffer_pages=BUFFER_PAGES,
        plugins=[ClonePages()],
    ) as client:
        state = (await client.store.states(["items"]))["items"]
        say(ready=mode, hydration=state.hydration, after_id=state.clone_after_id)
        items = client.table("items")
        if mode == "setup":
            await client.sync.clone()
            for i in range(RECORDS):
                await items.insert({"id": f"r{i:02}", "title": "v-", "n": i})
            for j in range(MERGES):
                await items.merge({"id": f"r{j % RECORDS:02}", "title": f"v{j}"})
        elif mode == "push":
            while await client.store.pending_count():
                await client.sync.push()
        elif mode in ("clone", "finish"):
            if mode == "clone" and state.hydration == "ready":
                await client.store.reset_hydration("items")
            await client.sync.clone()
            await client.sync.pull()
        say(done=mode, pending=await client.store.pending_count())


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
