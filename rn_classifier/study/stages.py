"""Resume bookkeeping of a study: ``RUN/stages.json``.

Each stage has a key: a hash of its own settings and of the keys of the stages it reads from
(so a changed upstream stage changes every key below it). A stage whose recorded key matches
and whose status is ``done`` is skipped; anything else runs (again). ``stages.json`` is
rewritten atomically after every change, so an interrupted study knows which stages finished:

    {"version": 1, "stages": {"preprocess": {"key": "…", "status": "done", "seconds": 12.3,
                                             "started": "…", "finished": "…", "detail": {…}}}}

status: ``running`` (started, not finished: interrupted or failed), ``done``, ``failed``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .. import atomic
from ..config import json_hash

STAGES_FILE = "stages.json"
VERSION = 1


def stage_key(settings: Any, upstream: Iterable[str] = ()) -> str:
    """A stable short hash of a stage's settings (JSON-able) and its upstream stages' keys."""
    return json_hash({"settings": settings, "upstream": list(upstream)})


def file_fingerprint(path: str | Path) -> dict:
    """Content hash of a small input file (a manifest, a labels CSV)."""
    data = Path(path).read_bytes()
    return {"path": str(Path(path).resolve()), "sha256": hashlib.sha256(data).hexdigest()[:16]}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class StageBook:
    """Reads and writes ``RUN/stages.json``; runs a stage unless its key is done."""

    def __init__(self, run_dir: Path, echo: Callable[[str], None] = print):
        self.path = Path(run_dir) / STAGES_FILE
        self.echo = echo
        self.stages: dict[str, dict] = {}
        if self.path.is_file():
            self.stages = json.loads(self.path.read_text()).get("stages", {})
        self.ran: list[str] = []        # stages that did work in this invocation
        self.skipped: list[str] = []

    def _save(self) -> None:
        atomic.write_json(self.path, {"version": VERSION, "stages": self.stages})

    def is_done(self, name: str, key: str) -> bool:
        entry = self.stages.get(name)
        return bool(entry and entry.get("key") == key and entry.get("status") == "done")

    def token(self, name: str) -> str:
        """What downstream keys depend on: the stage's key and when it last finished, so a
        stage that ran again (an interrupted upstream stage finished) reruns what reads it."""
        entry = self.stages.get(name) or {}
        return f"{entry.get('key')}@{entry.get('finished')}"

    def previous(self, name: str) -> dict | None:
        return self.stages.get(name)

    def run(self, name: str, key: str, work: Callable[[bool], Any]) -> Any:
        """Run ``work(stale)`` unless ``name`` is done with ``key``; returns its detail (or the
        recorded one when skipped). ``stale`` is True when the stage ran before with another
        key: its outputs belong to other settings and must be replaced, not resumed."""
        if self.is_done(name, key):
            self.skipped.append(name)
            self.echo(f"[{name}] up to date (key {key}), skipped")
            return self.stages[name].get("detail")
        old = self.stages.get(name)
        stale = bool(old and old.get("key") != key)
        resuming = bool(old and old.get("key") == key)
        self.echo(f"[{name}] {'resuming' if resuming else 'running'}"
                  + (" (settings or inputs changed)" if stale else ""))
        self.stages[name] = {"key": key, "status": "running", "started": _now()}
        self._save()
        started = time.perf_counter()
        try:
            detail = work(stale)
        except BaseException:
            self.stages[name].update(status="failed", seconds=round(time.perf_counter() - started, 1))
            self._save()
            raise
        seconds = round(time.perf_counter() - started, 1)
        self.stages[name].update(status="done", seconds=seconds, finished=_now(),
                                 detail=detail if detail is not None else {})
        self._save()
        self.ran.append(name)
        self.echo(f"[{name}] done in {seconds:.1f} s")
        return detail

    def forget(self, names: Iterable[str]) -> None:
        """Drop stages that are no longer part of the study (a model removed from the config)."""
        changed = False
        for name in list(names):
            if name in self.stages:
                del self.stages[name]
                changed = True
        if changed:
            self._save()

    def timings(self) -> dict[str, float]:
        return {name: e.get("seconds", 0.0) for name, e in self.stages.items()}
