"""Imported last by the warm workers' forkserver (normexp/workers.py), once it has imported the training code.

Everything the server imported (torch, dynamo: over 200k objects) moves to the garbage collector's permanent
generation, as Python's ``gc.freeze`` documentation advises before ``fork()``: forked workers share those
pages without the collector writing to them, and a full collection skips them. loky runs ``gc.collect()``
after each job when psutil is absent: 0.1-0.17 s per job here with them, nothing without.

The server then leaves through ``os._exit`` when the command ends. It never ran any work, and tearing torch
down takes it ~1 s during which it still holds the command's stdout and stderr (and its frozen objects would
have nanobind report them as leaks). A process forked from the server (a worker, or a child a job forks) that
ends through a normal exit still tears down, with its own exit status.

The server and every process forked from it end with their parent, however it ended (normexp/lifecycle.py):
the command names itself as the server's parent in ``SERVER_ENV``. Outside the server, importing this module
does nothing.
"""

import atexit
import gc
import os

from normexp import lifecycle

SERVER_ENV = "NORMEXP_WARM_SERVER"


def _skip_teardown_in(server_pid: int) -> None:
    if os.getpid() == server_pid:  # not in a process forked from the server
        os._exit(0)


_parent = os.environ.pop(SERVER_ENV, None)
if _parent:
    gc.freeze()
    atexit.register(_skip_teardown_in, os.getpid())
    lifecycle.serve_as_warm_server(int(_parent))
