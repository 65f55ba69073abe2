"""How normexp's processes stop: a signal stops a run the way Ctrl-C does, and no worker outlives its command.

- A command line (``normexp-train``, ``normexp-reproduce``) turns SIGTERM into :class:`Interrupted`, a
  ``KeyboardInterrupt``: the run in progress records itself ``interrupted`` and a sweep stops, as with Ctrl-C.
  Before raising it (or Ctrl-C's own ``KeyboardInterrupt``), the command stops its warm workers' server and
  waits for it, so that the workers' runs record themselves before joblib kills what is left.
- The warm workers' server (normexp/warm_server.py) and every process forked from it get SIGTERM from the
  kernel when their parent ends, however it ended (SIGKILL included): Linux ``prctl(PR_SET_PDEATHSIG)``.
  On SIGTERM the server stops its workers, waits for them (SIGKILL after ``STOP_SECONDS``) and leaves; a
  worker ends its run as ``interrupted`` (it resumes from its last checkpoint next time) and then exits,
  since nobody is left to take its result.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing.forkserver
import os
import signal
import sys
import time
from pathlib import Path

STOP_SECONDS = 8.0  # a stopped worker's run needs well under a second to record itself
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises ``KeyboardInterrupt``."""


def interruption(error: BaseException) -> str | None:
    """What interrupted a run, or None when ``error`` is an error of the run (its status is then failed)."""
    if isinstance(error, Interrupted):
        return f"interrupted by {error}"
    return "interrupted by Ctrl-C (SIGINT)" if isinstance(error, KeyboardInterrupt) else None


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name


# ---------------------------------------------------------------- a command line

def _stopping() -> bool:
    """Whether this thread is already handling an interruption (recording it, say): a second signal then
    must not cut that short."""
    return isinstance(sys.exc_info()[1], KeyboardInterrupt)


def _interrupt(signum, frame) -> None:
    """SIGTERM or SIGINT to a command: its warm workers stop first (their runs record themselves), then the
    command, by the exception Ctrl-C raises."""
    stop_warm_server()
    if not _stopping():
        raise Interrupted(_signal_name(signum)) if signum == signal.SIGTERM else KeyboardInterrupt


@contextlib.contextmanager
def command(prog: str):
    """A console script's whole run: SIGTERM stops it as Ctrl-C does; either ends it with one line on stderr
    and the shell's status for that signal (143, 130)."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except KeyboardInterrupt as stop:
        name = str(stop) if isinstance(stop, Interrupted) else "SIGINT"
        print(f"{prog}: interrupted ({name}); run the same command again to resume", file=sys.stderr)
        gc.freeze()  # the collection at exit would walk torch's objects: seconds on a busy machine
        raise SystemExit(128 + signal.Signals[name]) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_warm_server(timeout: float = 2 * STOP_SECONDS) -> None:
    """Stop this process's warm workers' server, if it started one, and wait until it is gone: the server
    first stops its workers and waits for their runs to record themselves."""
    server = multiprocessing.forkserver._forkserver
    pid = server._forkserver_pid
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
            time.sleep(0.02)
    server._forkserver_pid = None  # reaped: a later ensure_running starts a new one


# ---------------------------------------------------------------- the warm server and its workers

def die_with_parent(parent: int) -> None:
    """Get SIGTERM when the parent ends (Linux); if ``parent`` has already gone, end now."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os._exit(128 + signal.SIGTERM)


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
            if int(ppid) == pid and state != "Z":
                found.append(int(stat.parent.name))
    return found


def _stop_server(signum, frame) -> None:
    """The server on SIGTERM: stop the workers, wait for them (then SIGKILL what is left), leave."""
    workers = children(os.getpid())
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while workers and time.monotonic() < deadline:
        time.sleep(0.02)
        workers = [pid for pid in workers if _alive_child(pid)]
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    os._exit(0)


def _alive_child(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:  # reaped already by the server's own loop
        return False


def serve_as_warm_server(parent: int) -> None:
    """Called in the warm workers' server: it and every process forked from it end with their parent."""
    die_with_parent(parent)
    signal.signal(signal.SIGTERM, _stop_server)
    os.register_at_fork(before=_note_forking_pid, after_in_child=_become_worker)


_forking_pid = 0


def _note_forking_pid() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


_in_run = False
_exit_after_run = False


def _become_worker() -> None:
    global _in_run, _exit_after_run
    _in_run = _exit_after_run = False
    signal.signal(signal.SIGTERM, _stop_worker)
    die_with_parent(_forking_pid)


def _stop_worker(signum, frame) -> None:
    global _exit_after_run
    if not _in_run:
        os._exit(128 + signum)
    _exit_after_run = True
    if not _stopping():  # Ctrl-C reaches workers too, just before the command stops them
        raise Interrupted(_signal_name(signum))


@contextlib.contextmanager
def a_run():
    """Around one run. In a warm worker told to stop, the run records itself as interrupted, then the
    worker exits instead of going back for the next job."""
    global _in_run
    _in_run = True
    try:
        yield
    finally:
        _in_run = False
        if _exit_after_run:
            os._exit(128 + signal.SIGTERM)
