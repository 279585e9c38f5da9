"""Version of the library and of the checkpoint format it writes.

This file travels inside every saved checkpoint (it is imported by `configuration.py`).
"""

__version__ = "0.1.0"

# Version of the `compressed_embedding` block written into `config.json`. Bump it when a checkpoint
# written by a new release could be misread by an older one. 2: the method's settings are nested under
# `method_config` (format 1 kept every method's settings flat); `decoder_bias` is stored resolved.
# 3: an untied output head compressed with codes of its own (`output_head`, a nested block); blocks without one are
# still written as format 2.
FORMAT_VERSION = 3
