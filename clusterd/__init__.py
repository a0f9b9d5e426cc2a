"""clusterd: a peer-to-peer cluster configuration manager."""

import warnings

__version__ = "0.1.0"

# asyncssh still names DSA keys (which we never use) when it is imported; cryptography
# 51 warns about that on every command's stderr, where a user would take it for an error.
warnings.filterwarnings("ignore", message="DSA is deprecated", module="asyncssh")
