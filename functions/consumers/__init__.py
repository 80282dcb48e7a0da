"""Consumer Lambdas: each a folder with a ``handler.py`` using ``dmsbus.consumer``."""
