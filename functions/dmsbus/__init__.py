"""dmsbus: the shared package bundled into every dmsbus function.

- ``dmsbus.envelope``: the change event (envelope v1), the public contract;
- ``dmsbus.consumer``: the ``@consumer`` decorator for consumer Lambdas;
- ``dmsbus.changes``/``ddbjson``/``names``/``partition``: stream records -> change events;
- ``dmsbus.publisher``/``kpl``/``shards``: change events -> the bus's Kinesis stream.
"""
