"""clusterd: a peer-to-peer cluster configuration manager."""

__version__ = "0.1.0"
