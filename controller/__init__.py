"""Cluster side of modelferry: the operator (Secrets and CRs -> Jobs -> status) and the node agent."""

if __name__ != "modelferry.controller":  # the folder sits at the top of the checkout; its import name does not
    raise ImportError(f"{__name__} is part of modelferry: import modelferry.controller", name=__name__)
