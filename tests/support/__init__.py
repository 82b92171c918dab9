"""Test doubles and guards shared by every test layer (unit, PAM, hardening, e2e).

Importable as ``support`` (pyproject.toml puts tests/ on the pytest pythonpath):

* ``support.conversation.Conv``: a scripted PAM conversation for ``login.Login``.
* ``support.mail.Mailbox``: what a test SMTP server received.
* ``support.codes.code_not_in``: a well-formed code that none of the valid ones is.
* ``support.blocking.no_block``: fail instead of hanging on a FIFO or a lock.
* ``support.records.stored``: the record a test expects in a store (never None).
* ``support.proxy.Proxy``: a TCP forwarder a test can cut (one host's network to the database).
"""
