"""The pure core: clocks, versions, state, merge, layers, edits, pending changes,
references, modes, membership rows, digests, errors.

May import: the standard library's pure parts, pydantic through ``clusterd.schema``, and
each other.  Never I/O, an event loop, a database, SSH, or anything of the store, the
mesh, the node, trust or the front ends (tests/test_layers_imports.py).
"""
