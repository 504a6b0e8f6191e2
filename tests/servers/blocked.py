"""Whether a thread is asleep in the kernel waiting for I/O (Linux ``/proc``): what a test waits on instead of
sleeping "long enough" for a reader to block in its read."""

from __future__ import annotations

from pathlib import Path


def blocked_in_io(pid: int | str, tid: int) -> bool:
    """True while thread ``tid`` of process ``pid`` sleeps in a system call other than a lock wait (a read,
    ``poll``, ``splice``...). A thread still running Python, or waiting on a lock (a futex), is not."""
    task = Path(f"/proc/{pid}/task/{tid}")
    try:
        state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        syscall = (task / "syscall").read_text().split()[0]
        wchan = (task / "wchan").read_text().strip()
    except (OSError, IndexError):
        return False
    return state == "S" and syscall != "running" and "futex" not in wchan


def threads_blocked_in_io(pid: int) -> int:
    """How many threads of process ``pid`` are :func:`blocked_in_io`."""
    try:
        tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return 0
    return sum(blocked_in_io(pid, tid) for tid in tids)
