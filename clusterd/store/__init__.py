"""The durable store of one machine (SQLAlchemy): tables, the commit log, sessions'
commits, validation of what arrives.

May import: the core, the schema, SQLAlchemy.  Never the mesh, the node, trust or the
front ends.
"""
