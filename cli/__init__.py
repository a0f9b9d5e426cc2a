"""The clusterd interactive shell (arrives with the shell issue)."""
