"""skiff's settings: defaults < TOML config file < SKIFF_* environment < explicit overrides (CLI flags).

`SKIFF_HOME` moves config, data and cache under one folder; without it the platform's user
directories are used (platformdirs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

APP_NAME = "skiff"


def skiff_home() -> Path | None:
    home = os.environ.get("SKIFF_HOME")
    return Path(home).expanduser() if home else None


def default_config_dir() -> Path:
    home = skiff_home()
    return home if home else Path(platformdirs.user_config_dir(APP_NAME))


def default_data_dir() -> Path:
    home = skiff_home()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP_NAME))


def default_cache_dir() -> Path:
    home = skiff_home()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME))


def config_file_path() -> Path:
    explicit = os.environ.get("SKIFF_CONFIG_FILE")
    return Path(explicit).expanduser() if explicit else default_config_dir() / "config.toml"


class KeyFileError(ValueError):
    """The API key file is unsafe to use; the message says how to fix it."""


def write_key_file(path: Path, key: str) -> Path:
    """Writes the key readable by its owner only, created that way (never briefly world-readable)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(key.strip() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


class Settings(BaseSettings):
    """Every knob skiff has. Field names are the TOML keys; env vars are SKIFF_<NAME>."""

    model_config = SettingsConfigDict(
        env_prefix="SKIFF_",
        extra="ignore",
        validate_default=True,
    )

    # Where things live.
    data_dir: Path = Field(default_factory=default_data_dir, description="index, answers database")
    cache_dir: Path = Field(default_factory=default_cache_dir, description="exported embedder, caches")

    # Local model (llama.cpp).
    model_path: Path | None = Field(
        default=None, description="GGUF file; empty means the bundled SmolLM2-135M-Instruct"
    )
    n_ctx: int = Field(default=4096, ge=256, description="context window in tokens")
    n_threads: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1)
    max_tokens: int = Field(default=384, ge=1, description="most tokens generated per answer")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int = 0

    # Embedder and retrieval.
    embedder_backend: str = Field(default="onnx", pattern="^(onnx|torch)$")
    top_k: int = Field(default=3, ge=0, description="note chunks given to the model")
    # all-MiniLM-L6-v2 was trained on 128-token inputs; longer chunks embed worse and slower.
    chunk_tokens: int = Field(default=128, ge=32, le=256, description="chunk size bound, embedder tokens")

    # Routing (router/uncertainty.py, router/coverage.py).
    sift_candidates: int = Field(default=50, ge=1, le=1000, description="top-K chunks SIFT selects from")
    sift_lambda: float = Field(default=0.01, gt=0, description="SIFT's λ′; larger tolerates near-repeats")
    router_prior: Path | None = Field(default=None, description="surrogate prior (.npz); empty = the shipped one")
    router_beta: float = Field(default=1.0, ge=0, description="optimism: score = gain mean + beta * std")
    cloud_share: float = Field(default=0.2, ge=0, le=1, description="share of questions meant for the cloud")
    local_plus_share: float = Field(default=0.2, ge=0, le=1, description="share meant for more local compute")

    # The local+ route (router/allocation.py): a vote over samples, or a test-time LoRA.
    vote_min_samples: int = Field(default=3, ge=1, le=16, description="samples for the easiest local+ question")
    vote_max_samples: int = Field(default=8, ge=1, le=16, description="samples for the hardest")
    vote_temperature: float = Field(default=0.7, gt=0, le=2.0)
    vote_escalate_below: float = Field(default=0.5, ge=0, le=1,
                                       description="agreement under this sends the question to the cloud, when online")
    lora_rank: int = Field(default=8, ge=1, le=256)
    lora_alpha: float = Field(default=16.0, gt=0)
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    lora_learning_rate: float = Field(default=1e-4, gt=0)
    ttt_alpha: float = Field(default=0.2, gt=0, description="adaptive SIFT: stop once n*sigma_n >= 1/alpha")
    ttt_max_steps: int = Field(default=16, ge=1, le=256, description="most optimizer steps per question")

    # The TUI: binding id -> keys, e.g. {good = "ctrl+y", cancel = "escape,ctrl+c"} (ids in the README).
    keymap: dict[str, str] = Field(default_factory=dict, description="remap the TUI's key bindings by id")
    # Any of Textual's themes ("textual-dark", "nord", "gruvbox", ...). A theme picked in the TUI's
    # command palette is remembered and wins over this one.
    theme: str = Field(default="", description="the TUI's starting theme (Textual's theme names)")

    # Indexing.
    watch_notes: bool = Field(default=False, description="the TUI re-indexes folders as their files change")
    max_file_mb: float = Field(default=20.0, gt=0, description="larger files are skipped")
    index_batch_chunks: int = Field(default=256, ge=1)

    # Cloud (router/escalation.py, cloud/client.py). The key is never printed or stored in history.
    cloud_base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint, ending in /v1")
    cloud_model: str | None = Field(default=None, description="model name the endpoint serves")
    cloud_api_key: SecretStr | None = Field(default=None, description="prefer SKIFF_CLOUD_API_KEY or the key file")
    cloud_api_key_file: Path = Field(default_factory=lambda: default_config_dir() / "cloud_api_key",
                                     description="written by `skiff cloud key`, mode 600")
    cloud_connect_timeout_s: float = Field(default=5.0, gt=0)
    cloud_first_token_timeout_s: float = Field(default=60.0, gt=0)
    cloud_total_timeout_s: float = Field(default=600.0, gt=0)
    cloud_retries: int = Field(default=2, ge=0, le=10, description="retries before the first token")
    cloud_max_tokens: int = Field(default=1024, ge=1, description="most tokens a cloud answer may have")
    cloud_context_tokens: int = Field(default=32768, ge=1024, description="the endpoint's context window")
    cloud_price_in_per_mtok: float = Field(default=0.0, ge=0, description="USD per 1M prompt tokens")
    cloud_price_out_per_mtok: float = Field(default=0.0, ge=0, description="USD per 1M answer tokens")
    cloud_budget_usd: float | None = Field(default=None, ge=0, description="monthly cloud budget, for stats")
    offline: bool = Field(default=False, description="never contact the cloud; hard questions stay local")
    # Notes that never leave the machine, besides those with `private: true` front matter.
    private_paths: list[str] = Field(default_factory=list, description="folders or globs of private notes")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file_path())
        return (init_settings, env_settings, toml)

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def router_dir(self) -> Path:
        return self.data_dir / "router"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "skiff.sqlite3"

    @model_validator(mode="after")
    def _samples_in_order(self) -> "Settings":
        if self.vote_min_samples > self.vote_max_samples:
            raise ValueError(f"vote_min_samples ({self.vote_min_samples}) is more than vote_max_samples "
                             f"({self.vote_max_samples})")
        return self

    @property
    def cloud_configured(self) -> bool:
        return bool(self.cloud_base_url and self.cloud_model)

    def cloud_key(self) -> str | None:
        """The API key: the setting (SKIFF_CLOUD_API_KEY) first, else the key file."""
        if self.cloud_api_key is not None and self.cloud_api_key.get_secret_value():
            return self.cloud_api_key.get_secret_value()
        path = Path(self.cloud_api_key_file).expanduser()
        if not path.is_file():
            return None
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyFileError(f"the key file {path} is readable by others (mode {mode:o}): "
                               f"run `chmod 600 {path}`; skiff will not use it until then")
        try:
            return path.read_text(encoding="utf-8").strip() or None
        except UnicodeDecodeError:
            raise KeyFileError(f"the key file {path} is not UTF-8 text: store the key again with "
                               "`skiff cloud key`") from None

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain values, secrets masked."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "********" if value.get_secret_value() else ""
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        return out


def load_settings(**overrides: Any) -> Settings:
    """Settings with CLI-style overrides; None values mean 'not given' and are dropped."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**given)
