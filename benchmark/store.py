"""Run ids, atomic writes and run status.

Every file is written to a temporary name in its own folder and renamed into place, so a
reader never sees half a file. ``status.json`` is written first as ``running`` and last as
``done``; a run is finished only when it says ``done``. A process computing a run (or training
a checkpoint) holds an exclusive lock on a file beside it, so two processes writing under the
same root never compute the same thing at once: the second waits, then finds it finished. The
operating system drops the lock when its process dies, so a ``running`` status whose lock is
free was left by an interrupted process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import traceback
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator

from filelock import FileLock, Timeout

from benchmark.config import NON_RESULT_KEYS, ExperimentConfig, hash_omitted

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
    if callable(obj) and not isinstance(obj, (str, int, float, bool)):  # a user's function: its import path
        return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__name__)}"
    return obj


def config_hash(cfg: ExperimentConfig, length: int = 10, identity: dict[str, Any] | None = None) -> str:
    """Hash of the resolved config without the keys that do not change results (and of ``identity``, when given:
    digests of a given model's weights and inputs)."""
    plain = {k: v for k, v in to_plain(cfg).items() if k not in NON_RESULT_KEYS}
    for group, key in hash_omitted(cfg):  # keys added later, at their defaults: earlier runs keep their ids
        plain.get(group, {}).pop(key, None)
        if plain.get(group) == {}:  # a group added later, every key at its default
            del plain[group]
    if identity:
        plain["identity"] = identity
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def run_id(cfg: ExperimentConfig, test: str, identity: dict[str, Any] | None = None) -> str:
    """Readable and stable: ``<model>_<data>_<test>_s<seed>_<hash>``."""
    return f"{cfg.model.name}_{cfg.data.name}_{test}_s{cfg.seed}_{config_hash(cfg, identity=identity)}"


def current_umask() -> int:
    """The process's umask (read without changing it where /proc says it; else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    The file gets the mode an ordinary ``open`` would give it (0666 less the umask: 0644 or 0664 under the usual
    umasks), not the temporary file's 0600, so a colleague in the group can read a shared results folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())
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


def check_writable(folder: Path, key: str, value: Any) -> None:
    """Create ``folder`` if needed and write a probe file in it; ValueError naming ``key`` otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{key}={str(value)!r} cannot be written ({err.strerror or err}: {folder}); "
                         f"choose a folder you can write to, e.g. {key}=results") from None


@contextmanager
def locked(lock_file: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` for the block; wait (saying so) while another process holds it.

    ``filelock`` uses ``flock`` on POSIX systems: the lock goes with the process, so a killed
    process leaves no stale lock. The lock file itself is left in place (deleting it would race).
    """
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("%s is being computed by another process; waiting for it to finish", what)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def lock_is_held(lock_file: Path) -> bool:
    """Whether some process holds ``lock_file`` now (False when the file does not exist)."""
    if not Path(lock_file).exists():
        return False
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


RUN_LOCK = ".lock"


def run_lock(run_dir: Path) -> Any:
    """The lock a process holds while it computes the run in ``run_dir``."""
    return locked(Path(run_dir) / RUN_LOCK, f"run {Path(run_dir).name}")


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's status, or None when there is none or it is damaged (not JSON, not UTF-8, not an object: logged
    with the file's name, and the run counts as not finished)."""
    path = Path(run_dir) / "status.json"
    try:
        status = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("%s is damaged (%s); the run counts as not finished", path, type(err).__name__)
        return None
    if not isinstance(status, dict):
        log.warning("%s holds a %s, not an object; the run counts as not finished", path, type(status).__name__)
        return None
    return status


def is_finished(run_dir: Path, required: list[str] | None = None) -> bool:
    """Done, and every file the status lists (and every ``required`` one) is present with the recorded hash."""
    status = read_status(run_dir)
    if not status or status.get("state") != "done":
        return False
    files = status.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        log.warning("run %s: status.json lists no file hashes; redoing", run_dir)
        return False
    missing = [name for name in (required or []) if name not in files]
    if missing:
        log.warning("run %s: status.json lists no hash for %s; redoing", run_dir, ", ".join(missing))
        return False
    for name, digest in files.items():
        f = Path(run_dir) / name
        if not f.exists() or file_sha256(f) != digest:
            log.warning("run %s: %s is missing or does not match its hash; redoing", run_dir, name)
            return False
    return True


def remove_temporaries(run_dir: Path) -> None:
    """Delete half-written temporary files and spill folders a killed process left (call only while holding the
    run's lock)."""
    for tmp in Path(run_dir).rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    for spill in Path(run_dir).glob(".maps_spill_*"):
        shutil.rmtree(spill, ignore_errors=True)


def staging_dir(run_dir: Path) -> Path:
    """Where ``overwrite=true`` writes a finished run's replacement (hidden, beside it, same file system)."""
    return Path(run_dir).parent / f".{Path(run_dir).name}.overwrite"


def _replaced(run_dir: Path) -> Path:
    return Path(run_dir).parent / f".{Path(run_dir).name}.replaced"


def replace_run(new: Path, run_dir: Path) -> None:
    """Put the finished run ``new`` in place of ``run_dir``: two renames, then the old one is deleted."""
    old = _replaced(run_dir)
    shutil.rmtree(old, ignore_errors=True)
    os.rename(run_dir, old)
    os.rename(new, run_dir)
    shutil.rmtree(old, ignore_errors=True)


def recover_replaced(run_dir: Path) -> None:
    """A process killed between ``replace_run``'s two renames left the previous run aside: put it back."""
    old, run_dir = _replaced(run_dir), Path(run_dir)
    if not old.is_dir():
        return
    if not (run_dir / "status.json").exists():  # the run folder holds at most its lock file: bring the old one back
        for item in old.iterdir():
            if item.name != RUN_LOCK:
                os.rename(item, run_dir / item.name)
        log.warning("run %s: the previous result was set aside by an interrupted overwrite; restored", run_dir)
    shutil.rmtree(old, ignore_errors=True)


def mark_running(run_dir: Path) -> float:
    start = time.time()
    write_json(Path(run_dir) / "status.json",
               {"state": "running", "started": start, "pid": os.getpid(), "host": socket.gethostname()})
    return start


# Written only by some runs (the fair null, data with known regions); hashed in status.json where present.
OPTIONAL_RUN_FILES = ("null.parquet", "localization.parquet")


def mark_done(run_dir: Path, started: float, files: list[str]) -> None:
    run_dir = Path(run_dir)
    files = list(files) + [n for n in OPTIONAL_RUN_FILES if n not in files and (run_dir / n).exists()]
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
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "error": f"{type(error).__name__}: {error}",
            "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        },
    )
