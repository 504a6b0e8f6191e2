"""Synchronize Jobs: Secret mode (``model-source``) and ModelSync, their pure plans and their reconcilers."""
