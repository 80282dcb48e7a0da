"""The environment variables dmsbus's functions read: each name written once, here, for
``config/functions.py``, which sets them, and for the handlers and cores, which read them."""

from __future__ import annotations

# Every function of the bus
BUS_NAME = "BUS_NAME"
#: Powertools' service name: the function's name.
POWERTOOLS_SERVICE = "POWERTOOLS_SERVICE_NAME"
#: The dead-letter queue a function parks poison records in.
DLQ_URL = "BUS_DLQ_URL"

# The glue and discovery's backfill: how the bus stream is written
STREAM_NAME = "BUS_STREAM_NAME"
AGGREGATE = "BUS_AGGREGATE"
AGGREGATE_MAX_BYTES = "BUS_AGGREGATE_MAX_BYTES"
PUT_MAX_ATTEMPTS = "BUS_PUT_MAX_ATTEMPTS"
NUMBERS = "BUS_NUMBERS"

# Typed events (docs/envelope.md, "Typed values"): the glue types with the schema table
TYPED = "BUS_TYPED"
SCHEMA_TABLE = "BUS_SCHEMA_TABLE"
#: How long a function keeps a table's schema before reading it again (a tunable).
SCHEMA_TTL_SECONDS = "BUS_SCHEMA_TTL_SECONDS"
#: ``source=function`` per source: the schema function to ask for a table's schema now.
SCHEMA_FUNCTIONS = "BUS_SCHEMA_FUNCTIONS"
#: ``glue.typed_wait_seconds``: how long the glue waits for a table's schema at a DDL moment.
TYPED_WAIT_SECONDS = "BUS_TYPED_WAIT_SECONDS"

# The schema function: its source (the secret is CREDENTIALS_NAME, as DMS's endpoint's)
SOURCE_NAME = "DMSBUS_SOURCE"
SOURCE_DATABASE = "DMSBUS_SOURCE_DATABASE"
#: The source's engine, as config names it: whose catalog the schema function reads.
SOURCE_ENGINE = "DMSBUS_SOURCE_ENGINE"
#: ``schema.table`` patterns (DMS's ``%`` wildcard) of the tables the source replicates.
SOURCE_TABLES = "DMSBUS_SOURCE_TABLES"
#: ``schema.table.column`` of the columns config excludes.
SOURCE_EXCLUDE = "DMSBUS_SOURCE_EXCLUDE"
#: ``schema.table=partition`` or ``schema.table=partition+sort``: each listed table's ``key``
#: in config (the source admin function checks that it is unique in the source).
SOURCE_KEYS = "DMSBUS_SOURCE_KEYS"

# The task lifecycle: the source's admin function it asks to check the source before the
# first start and to find and drop DMS's replication slot (engine and database: SOURCE_*)
SOURCE_ADMIN_FUNCTION = "DMSBUS_SOURCE_ADMIN_FUNCTION"

# Discovery: the glue's event source mapping, and its own work
GLUE_FUNCTION_NAME = "GLUE_FUNCTION_NAME"
GLUE_ON_FAILURE_ARN = "GLUE_ON_FAILURE_ARN"
GLUE_BATCH_SIZE = "GLUE_BATCH_SIZE"
GLUE_BATCHING_WINDOW_SECONDS = "GLUE_BATCHING_WINDOW_SECONDS"
GLUE_PARALLELIZATION_FACTOR = "GLUE_PARALLELIZATION_FACTOR"
GLUE_MAX_RETRIES = "GLUE_MAX_RETRIES"
GLUE_MAX_RECORD_AGE_SECONDS = "GLUE_MAX_RECORD_AGE_SECONDS"
KEEP_PROVISIONED = "KEEP_PROVISIONED"
BACKFILL = "BACKFILL"
SWEEP_MINUTES = "SWEEP_MINUTES"

# Consumers: the deployment's filter, and what their config entry gives them
TABLES = "DMSBUS_TABLES"
OPS = "DMSBUS_OPS"
#: The name (or ARN) of a Secrets Manager entry the consumer reads: a name, not a credential.
CREDENTIALS_NAME = "DMSBUS_SECRET"
BUCKET = "DMSBUS_BUCKET"
