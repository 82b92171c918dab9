"""The database backend's host side: the agent, the database and the fleet key.

The only layer that imports psycopg (3) and cryptography (the ``fleet`` extra).
The login path never imports it: it speaks to the agent through
``store.agent`` over a Unix socket (tests/test_layers.py checks it).
"""
