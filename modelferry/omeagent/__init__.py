"""OME-Agent compatibility: its YAML keys and ``OME_AGENT_*`` variables, translated to our settings.

``hf-download`` and ``replica`` are implemented in :mod:`modelferry.cli.omeagent`;
``enigma --config`` and ``training-agent --config`` reuse :func:`load_ome_config`
with their own subcommand name and read the sections they own.
"""

from modelferry.omeagent.config import KeyReport, OMEAgentConfig, load_ome_config
from modelferry.omeagent.keys import KEYS, OMEKey, keys_for

__all__ = ["KEYS", "KeyReport", "OMEAgentConfig", "OMEKey", "keys_for", "load_ome_config"]
