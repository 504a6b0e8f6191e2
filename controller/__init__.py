"""Cluster side of modelferry: the operator (Secrets and CRs -> Jobs -> status) and the node agent."""
