"""modelferry: move large ML models and fine-tuning work through Kubernetes."""

__version__ = "0.1.0"
