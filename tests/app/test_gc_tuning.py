"""A served app freezes its start-up objects out of the collector's way; an app built in tests does not.

In a process of its own, so the test process's collector is left as it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from goodnight.kit.gc_tuning import YOUNG_GENERATION_THRESHOLD
from tests.support.processes import clean_env, run_cli

PROBE = """
import asyncio, gc, json, sys
from goodnight import main

async def probe(factory):
    app = factory()
    async with app.router.lifespan_context(app):
        return {"frozen": gc.get_freeze_count(), "young": gc.get_threshold()[0]}

plain = asyncio.run(probe(lambda: main.create_app(main.get_settings())))
served = asyncio.run(probe(main.create_served_app))
print(json.dumps({"plain": plain, "served": served}))
"""


def test_a_served_app_freezes_its_start_up_objects_and_collects_less_often(tmp_path: Path) -> None:
    env = clean_env(GOODNIGHT_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'gc.db'}")
    migrated = run_cli(["migrate"], cwd=tmp_path, env=env)  # the schema first, as serve makes it
    assert migrated.returncode == 0, migrated.stderr
    finished = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 0, finished.stderr
    found = json.loads(finished.stdout.strip().splitlines()[-1])
    assert found["plain"] == {"frozen": 0, "young": 700}
    assert found["served"]["frozen"] > 10_000  # the modules, the app, the mappers: all of start-up
    assert found["served"]["young"] == YOUNG_GENERATION_THRESHOLD
