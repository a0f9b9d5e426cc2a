"""The mesh: typed messages and frames, the sans-I/O link protocol (``protocol``), what
it keeps of peers and members, and the transports that carry it (``transport``).

May import: the core.  The protocol does no I/O and never imports the store, the node
or the transports; the transports may import the node's pieces they serve.
"""
