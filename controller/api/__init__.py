"""The typed Kubernetes API of modelferry: pydantic models of every custom resource's spec and status.

One module per kind and version under ``v1alpha1/``; ``manifests/crds/*.yaml`` is generated from them
(``python -m tools.crds``). This package imports nothing else of the controller: every other controller
package may import it.
"""
