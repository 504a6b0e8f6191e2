"""Pure parts of serving: OpenAI request parsing, stop-string hold-back, chat prompts, pod trouble order."""

from __future__ import annotations

from typing import Any

import pytest

from modelferry.controller.serving.status import pod_trouble
from modelferry.serve.model import RequestError, chat_prompt, held_back
from modelferry.serve.requests import parse

NAMES = ["base", "tuned"]


def test_held_back_keeps_only_a_possible_start_of_a_stop_string() -> None:
    assert held_back("hello wor", ("world",)) == 3
    assert held_back("hello", ("world",)) == 0
    assert held_back("ab", ("bc", "abx")) == 2
    assert held_back("x", ()) == 0


def test_parse_defaults_and_names() -> None:
    chat = parse({"messages": [{"role": "user", "content": "hi"}]}, chat=True, names=NAMES, max_tokens_limit=64)
    assert (
        chat.model == "base" and chat.params.max_tokens is None and chat.messages == [{"role": "user", "content": "hi"}]
    )
    done = parse({"model": "tuned", "prompt": ["x"], "stop": "\n"}, chat=False, names=NAMES, max_tokens_limit=64)
    assert done.model == "tuned" and done.prompt == "x" and done.params.max_tokens == 16 and done.params.stop == ("\n",)
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert parse(
        {"messages": [{"role": "user", "content": parts}]}, chat=True, names=NAMES, max_tokens_limit=8
    ).messages == [{"role": "user", "content": "ab"}]


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "x", "max_tokens": True},
        {"prompt": "x", "max_tokens": 65},
        {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]},
        {"prompt": "x", "stop": [""]},
        {"prompt": "x", "seed": -1},
        {"prompt": "x", "top_p": 2},
        {"prompt": ["a", "b"]},
        [],
    ],
)
def test_parse_rejects(body: Any) -> None:
    with pytest.raises(RequestError):
        parse(body, chat=False, names=NAMES, max_tokens_limit=64)


def test_chat_prompt_without_a_template_is_a_transcript() -> None:
    class NoTemplate:
        chat_template = None

    text = chat_prompt(NoTemplate(), [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    assert text == "system: be brief\nuser: hi\nassistant:"


def pod(name: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def test_the_most_telling_pod_trouble_wins() -> None:
    crash = {"name": "engine", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {}}
    oom = {"name": "engine", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
           "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}  # fmt: skip
    unsched = {"type": "PodScheduled", "status": "False", "message": "0/2 nodes"}
    trouble = pod_trouble(
        [pod("a", conditions=[unsched]), pod("b", containerStatuses=[crash]), pod("c", containerStatuses=[oom])]
    )
    assert trouble is not None and trouble.reason == "OOMKilled" and "pod c" in trouble.message
    assert pod_trouble([pod("a", conditions=[unsched])]).reason == "Unschedulable"  # type: ignore[union-attr]
    assert pod_trouble([pod("a", containerStatuses=[{"name": "engine", "state": {"running": {}}}])]) is None
