"""``dmsbus``: the one command line of dmsbus (``[project.scripts]`` in pyproject.toml,
installed into ``.venv`` by make).

Local mode: ``demo``, ``up``, ``verify``, ``new-consumer``; operations: ``replay``. Each command is a module
with ``add_command(commands, repository)`` that registers an argparse subcommand whose
``run`` default takes the parsed arguments and returns the exit status.
"""
