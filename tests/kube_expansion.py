"""Kubernetes' ``$(VAR)`` expansion of a container, as the kubelet applies it (for tests).

The rules of ``third_party/forked/golang/expansion`` in Kubernetes: ``$$`` becomes ``$``; ``$(NAME)``
becomes the value of NAME when NAME is defined and stays as written when not; anything else is kept.
Env ``value`` fields are expanded against the variables defined *before* them; ``command`` and ``args``
against all of the container's variables. ``valueFrom`` values (Secret keys) are taken as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def expand(text: str, env: Mapping[str, str]) -> str:
    """One string through Kubernetes' expansion with the variables ``env``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                close = text.find(")", i + 2)
                if close != -1:
                    name = text[i + 2 : close]
                    out.append(env.get(name, f"$({name})"))
                    i = close + 1
                    continue
                out.append("$(")
                i += 2
                continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def expanded_container(container: dict[str, Any], secrets: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """The ``env`` (name -> value), ``command`` and ``args`` the process of ``container`` would see.

    ``secrets`` maps Secret name -> key -> value for ``secretKeyRef``; other ``valueFrom`` sources
    (field references) come out empty.
    """
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = expand(str(entry["value"]), env)
            continue
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        env[entry["name"]] = str(secrets.get(ref["name"], {}).get(ref["key"], "")) if ref else ""
    return {
        "env": env,
        "command": [expand(str(c), env) for c in container.get("command") or []],
        "args": [expand(str(a), env) for a in container.get("args") or []],
    }
