"""The node model agent (``modelferry agent``): keeps BaseModel/ClusterBaseModel models on the right nodes.

Pure decisions live in :mod:`selection`, :mod:`tasks`, :mod:`shape`, :mod:`disk`,
:mod:`entries`; thin adapters do I/O: :mod:`gopher` (the engine), :mod:`kubeside`
(ConfigMap, labels, watches), :mod:`health` (HTTP).
"""
