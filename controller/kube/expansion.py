"""Kubernetes' ``$(VAR)`` expansion in a container's ``command``, ``args`` and env ``value``, and its escape."""

from __future__ import annotations


def literal(text: str) -> str:
    """``text`` as a container's ``command``/``args``/env ``value`` must hold it to reach the process unchanged.

    Kubernetes expands ``$(VAR)`` there (a tenant's ``$(MODELFERRY_SOURCE__HF__TOKEN)`` would become the
    token) and turns ``$$`` into ``$``: doubling every ``$`` makes a user string literal.
    """
    return text.replace("$", "$$")
