"""Stored SMTP connections: persistence, encryption at rest, environment URLs, import/export.

Submodules are imported where used: ``store`` loads the database layer, ``env`` does not.
"""
