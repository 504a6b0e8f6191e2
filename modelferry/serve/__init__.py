"""``modelferry serve``: the built-in OpenAI-compatible CPU engine (transformers, peft for adapters).

``model`` loads a model directory (and an optional LoRA adapter) and generates in worker threads;
``api`` is the aiohttp application (``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``,
``/health``, ``/metrics``); ``metrics`` holds the ``modelferry_serve_*`` Prometheus metrics.
"""
