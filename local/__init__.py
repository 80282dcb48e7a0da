"""Local mode: the whole dmsbus data path on one machine (``make demo``).

Only what cannot run here is replaced: the source database is a real PostgreSQL (embedded,
or any through ``DMSBUS_SOURCE_URL``), DMS is a stand-in that reads its logical
replication slot, AWS is one moto server. Discovery, glue and consumers are the deployed
handlers, unchanged.

The deployed code (functions/: dmsbus, glue, discovery, consumers) is imported as Lambda
imports it, as top-level packages: the dmsbus package installs them from functions/
(pyproject.toml).
"""
