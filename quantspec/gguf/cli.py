"""What the GGUF subcommands share: running one with clear errors (no
traceback for bad input), Ctrl-C and SIGTERM ending it cleanly (the atomic
output removes its temporary file), and the progress-bar default."""

from __future__ import annotations

import signal
import sys
from typing import Callable

#: exit statuses
OK, FAILED, INTERRUPTED = 0, 1, 130


def _terminate(signum, frame):  # SIGTERM: unwind like Ctrl-C so that cleanup runs
    raise KeyboardInterrupt


def run_command(prog: str, body: Callable[[], int], failed: int = FAILED) -> int:
    """Run ``body``; quantspec errors, OS errors and interrupts become one
    line on stderr and an exit status (``failed``, or 130 on interrupt)."""
    from quantspec.errors import QuantspecError

    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except (ValueError, OSError):  # not the main thread: leave SIGTERM alone
        previous = None
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was written", file=sys.stderr)
        return INTERRUPTED
    except (QuantspecError, OSError, ImportError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return failed
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def progress_default(flag: bool | None) -> bool:
    """Progress bars on a terminal unless --quiet / --no-progress."""
    return sys.stderr.isatty() if flag is None else flag
