"""Configuration reaches the services (``docs/services.md``): the journal of this
machine's effective configuration (``watch``), and targets, which render service files,
validate them, swap them in and reload the service.

May import: the core and the schema.  Never the store, the mesh, the node or the front
ends: the node hands it effective values and gets back status.
"""
