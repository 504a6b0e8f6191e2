"""The operator: model-source Secrets and ModelSync resources become synchronize Jobs with status."""
