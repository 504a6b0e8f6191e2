"""huggingface_hub's HTTP client with our trust: its client is process-wide, set through its public factory."""

from __future__ import annotations

import ssl
import threading

import httpx2
from huggingface_hub import set_client_factory

from modelferry.tls import TLSConfig

_lock = threading.Lock()
_current: TLSConfig | None = None


def use_hub_tls(tls: TLSConfig) -> None:
    """Make huggingface_hub's shared client trust ``tls`` (a no-op when it already does)."""
    global _current
    with _lock:
        if _current == tls:
            return
        # No bundle given: keep httpx's own default store, as huggingface_hub does.
        verify: ssl.SSLContext | bool = tls.ssl_context() if (tls.ca or not tls.verify) else True

        def factory() -> httpx2.Client:
            # The same client huggingface_hub builds by default, with our SSL context.
            from huggingface_hub.utils._http import hf_request_event_hook

            return httpx2.Client(
                event_hooks={"request": [hf_request_event_hook]},
                follow_redirects=True,
                timeout=None,
                verify=verify,
            )

        set_client_factory(factory)
        _current = tls
