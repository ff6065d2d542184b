"""Run ids, atomic writes and run status.

Every file is written to a temporary name in its own folder and renamed into place, so a
reader never sees half a file. ``status.json`` is written first as ``running`` and last as
``done``; a run is finished only when it says ``done``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
import traceback
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from benchmark.config import NON_RESULT_KEYS, ExperimentConfig

log = logging.getLogger(__name__)


def to_plain(obj: Any) -> Any:
    """Dataclasses and enums -> JSON-ready dicts, lists and strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def config_hash(cfg: ExperimentConfig, length: int = 10) -> str:
    """Hash of the resolved config without the keys that do not change results."""
    plain = {k: v for k, v in to_plain(cfg).items() if k not in NON_RESULT_KEYS}
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def run_id(cfg: ExperimentConfig, test: str) -> str:
    """Readable and stable: ``<model>_<data>_<test>_s<seed>_<hash>``."""
    return f"{cfg.model.name}_{cfg.data.name}_{test}_s{cfg.seed}_{config_hash(cfg)}"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(to_plain(obj), indent=2, sort_keys=False, default=str) + "\n")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_status(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_finished(run_dir: Path) -> bool:
    """Done, and every file the status lists is present with the recorded hash."""
    status = read_status(run_dir)
    if not status or status.get("state") != "done":
        return False
    for name, digest in status.get("files", {}).items():
        f = Path(run_dir) / name
        if not f.exists() or file_sha256(f) != digest:
            log.warning("run %s: %s is missing or does not match its hash; redoing", run_dir, name)
            return False
    return True


def mark_running(run_dir: Path) -> float:
    start = time.time()
    write_json(Path(run_dir) / "status.json", {"state": "running", "started": start, "pid": os.getpid()})
    return start


def mark_done(run_dir: Path, started: float, files: list[str]) -> None:
    run_dir = Path(run_dir)
    write_json(
        run_dir / "status.json",
        {
            "state": "done",
            "started": started,
            "finished": time.time(),
            "files": {name: file_sha256(run_dir / name) for name in files},
        },
    )


def mark_failed(run_dir: Path, started: float, error: BaseException) -> None:
    write_json(
        Path(run_dir) / "status.json",
        {
            "state": "failed",
            "started": started,
            "finished": time.time(),
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(),
        },
    )
