"""One run per OUTPUT_DIR: a lock file naming the process that writes there.

Two runs writing into one OUTPUT_DIR interleave their log.txt / metrics.json and overwrite each
other's checkpoints. :class:`OutputDirLock` creates ``OUTPUT_DIR/run.lock`` (``O_EXCL``: one creator
wins) holding the PID, host and command of the run; a second run is refused while that process is
alive. A lock left by a dead process on this host (a killed run) is taken over with a warning. A
lock from another host cannot be checked and is honoured. tools/train_net.py takes it in the
launching process (which outlives its workers) and releases it at exit, also on an exception
(``atexit`` for a kill that still runs Python's exit handlers).
"""

import atexit
import json
import logging
import os
import platform
import sys
import time

from ..config import SegAliasSetupError

__all__ = ["OutputDirLock", "OutputDirInUseError", "LOCK_NAME"]

logger = logging.getLogger(__name__)
LOCK_NAME = "run.lock"


class OutputDirInUseError(SegAliasSetupError):
    """OUTPUT_DIR holds the lock of another live run."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class OutputDirLock:
    """``with OutputDirLock(dir): ...`` or ``acquire()`` / ``release()``; ``force`` takes over a
    live lock."""

    def __init__(self, output_dir: str, force: bool = False):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_NAME)
        self.force = force
        self.held = False

    def _owner(self):
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def acquire(self):
        os.makedirs(self.output_dir, exist_ok=True)
        me = {
            "pid": os.getpid(),
            "host": platform.node(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._handle_existing(me)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            atexit.register(self.release)
            return self
        raise OutputDirInUseError(
            f"OUTPUT_DIR {self.output_dir}: could not take the lock {self.path}"
        )

    def _handle_existing(self, me):
        owner = self._owner()
        if (
            owner is None
        ):  # unreadable / being written: another run is creating it right now, or a torn write
            if time.time() - os.path.getmtime(self.path) < 5:
                time.sleep(0.5)
                owner = self._owner()
            if owner is None:
                logger.warning("OUTPUT_DIR lock %s is unreadable; taking it over", self.path)
                self._remove()
                return
        pid, host = int(owner.get("pid", -1)), str(owner.get("host", "?"))
        ours = pid == me["pid"] and host == me["host"]
        if ours or (host == me["host"] and not _pid_alive(pid)):
            if not ours:
                logger.warning(
                    "OUTPUT_DIR %s: taking over the stale lock of PID %d on %s (that process is "
                    "gone)",
                    self.output_dir,
                    pid,
                    host,
                )
            self._remove()
            return
        if self.force:
            logger.warning(
                "OUTPUT_DIR %s: --force-output-dir: taking over the lock of PID %d on %s, which "
                "may still be writing there",
                self.output_dir,
                pid,
                host,
            )
            self._remove()
            return
        raise OutputDirInUseError(
            f"OUTPUT_DIR {self.output_dir} is in use by PID {pid} on host {host} since "
            f"{owner.get('started', '?')} "
            f"(lock file {self.path}); use another OUTPUT_DIR, wait for that run, or pass "
            "--force-output-dir"
        )

    def _remove(self):
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def release(self):
        """Remove the lock file if it is still ours."""
        if not self.held:
            return
        self.held = False
        owner = self._owner()
        if owner and owner.get("pid") == os.getpid() and owner.get("host") == platform.node():
            self._remove()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
