"""skiff.config: every setting in one pydantic-settings model (defaults, config file, SKIFF_*
environment variables), where skiff keeps its files, and the cloud key file. It imports nothing
else of skiff, so any layer may read it cheaply (the TUI reads its settings before the heavy
parts of the pipeline have loaded)."""

from skiff.config.settings import KeyFileError, Settings, load_settings

__all__ = ["KeyFileError", "Settings", "load_settings"]
