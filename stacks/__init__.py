"""The CDK app's stacks: the bus, one per source database, and the consumers.

``app.py`` composes them from ``config/``. Stacks wire grants; constructs create resources
and expose them as attributes.
"""
