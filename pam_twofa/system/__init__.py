"""Adapters to the operating system: accounts, files, syslog, mail, PAM service files, terminals.

Thin and without decisions: they read and write what the core and the
commands decide.
"""
