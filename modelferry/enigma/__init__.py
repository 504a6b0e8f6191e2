"""Enigma: envelope encryption of model files in constant memory.

See :mod:`modelferry.enigma.format` for the file format, :mod:`modelferry.enigma.kms`
for the key providers and :mod:`modelferry.enigma.files` for the operations.
"""
