"""The source admin function: in the source's network, with the credentials DMS's endpoint
reads, it checks what DMS needs of the source (``dmsbus doctor``) and drops DMS's logical
replication slot once the task is gone (a PostgreSQL source keeps WAL for a slot without
bound)."""
