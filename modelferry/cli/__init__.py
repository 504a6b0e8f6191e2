"""The ``modelferry`` command line."""
