"""The running member: the daemon (links, timers, status, membership following), the
front ends' API (``api``), the control socket, configuration, identity, admin
operations, publishing, alert mail, cross-node checks.

May import: the core, the store, the mesh, trust, the schema.  Never the front ends
(``clusterd.cli``): ``__main__`` hands the daemon its shell factory.
"""
