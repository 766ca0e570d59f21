"""Configuration tree and workspace paths."""

from configs.paths import Workspace
from configs.settings import BayesPilotConfig, ConfigError, load_config

__all__ = ["BayesPilotConfig", "ConfigError", "Workspace", "load_config"]
