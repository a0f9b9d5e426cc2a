"""Adapters that move protocol frames: SSH (admin port), CCS, and in-memory."""
