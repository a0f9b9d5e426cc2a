"""Not the product: real daemons on loopback for tests, benchmarks and the demo.

May import anything of clusterd; nothing of the product imports it.
"""
