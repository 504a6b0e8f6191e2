"""The POSIX-sh wrapper the trainer container runs around the user's command.

It is the trainer's half of the pod protocol (the sidecar's half is ``modelferry.sidecar.supervisor``); both
use the files below in ``$MODELFERRY_WORKSPACE/.modelferry``. The controller puts this text in the
trainer container's command (``sh -c SCRIPT modelferry-wrapper CMD ARGS...``), so any image with a
``/bin/sh`` works and nothing needs installing in it.
"""

from __future__ import annotations

CONTROL_DIR = ".modelferry"
PROTOCOL_FILES = ("env", "go", "abort", "stop", "trainer.log", "exit-code", "command.sh")

WRAPPER_SCRIPT = r"""
ctl="${MODELFERRY_WORKSPACE:-/workspace}/.modelferry"
mkdir -p "$ctl" || exit 2
echo "modelferry: waiting for the sidecar to stage the inputs" >&2
while [ ! -f "$ctl/go" ]; do
  if [ -f "$ctl/abort" ]; then
    echo "modelferry: staging failed, the trainer does not start" >&2
    exit "$(cat "$ctl/abort" 2>/dev/null || echo 3)"
  fi
  sleep 1
done
[ -f "$ctl/env" ] && . "$ctl/env"
# no command given (a built-in runtime): run the one the sidecar wrote after staging
if [ "$#" -eq 0 ]; then set -- /bin/sh "$ctl/command.sh"; fi
"$@" >>"$ctl/trainer.log" 2>&1 &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
(
  while kill -0 "$child" 2>/dev/null; do
    if [ -f "$ctl/stop" ]; then
      if grep -q KILL "$ctl/stop"; then kill -KILL "$child" 2>/dev/null; else kill -TERM "$child" 2>/dev/null; fi
      rm -f "$ctl/stop"
    fi
    sleep 1
  done
) &
watcher=$!
wait "$child"
rc=$?
# a trapped signal interrupts wait: keep waiting for the trainer's own status
while kill -0 "$child" 2>/dev/null; do
  wait "$child"
  rc=$?
done
kill "$watcher" 2>/dev/null
echo "$rc" >"$ctl/exit-code.tmp" && mv "$ctl/exit-code.tmp" "$ctl/exit-code"
exit "$rc"
""".lstrip()


def wrapped_command(command: list[str], args: list[str]) -> list[str]:
    """The trainer container's ``command``: the wrapper, then the user's command and args."""
    return ["/bin/sh", "-c", WRAPPER_SCRIPT, "modelferry-wrapper", *command, *args]
