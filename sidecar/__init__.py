"""Pod side of modelferry: the training sidecar (stage, supervise, metrics, upload)."""

if __name__ != "modelferry.sidecar":  # the folder sits at the top of the checkout; its import name does not
    raise ImportError(f"{__name__} is part of modelferry: import modelferry.sidecar", name=__name__)
