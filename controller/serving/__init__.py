"""Serving: ModelServer -> engine presets -> Deployment + Service -> status (pure), and its reconciler."""
