"""Who may be a member and who may log in: joining (and its command line), creating
and leaving clusters, membership operations as commits, logins and lockout, DNS.

May import: the core, the store, the mesh's messages, the schema.  Never the front ends.
"""
