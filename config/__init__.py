"""dmsbus's config: the YAML files in this folder and the typed model that reads them.

Plain Python (no ``aws_cdk``): the CDK app (``stacks/``) and local mode (``local/``) both
load it with ``load_config("config")``.
"""

from config.loader import ConfigError, load_config
from config.mappings import TargetTable, render_table_mappings, resolve, table_name, task_settings
from config.model import BusConfig, Config, ConsumerConfig, SourceConfig, TableConfig

__all__ = [
    "BusConfig",
    "Config",
    "ConfigError",
    "ConsumerConfig",
    "SourceConfig",
    "TableConfig",
    "TargetTable",
    "load_config",
    "render_table_mappings",
    "resolve",
    "table_name",
    "task_settings",
]
