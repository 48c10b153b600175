"""skiff's settings: defaults < TOML config file < SKIFF_* environment < explicit overrides (CLI flags).

`SKIFF_HOME` moves config, data and cache under one folder; without it the platform's user
directories are used (platformdirs).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import platformdirs
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from skiff.config.keys import KeyFileError, read_key_file, write_key_file

APP_NAME = "skiff"

__all__ = ["KeyFileError", "Settings", "load_settings", "write_key_file"]


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


class ConfigError(ValueError):
    """Settings that cannot be used. The message says where the bad value came from (the config
    file, a SKIFF_* variable or a flag), the key and what is wrong, in a few lines: never a
    traceback, never a secret's value."""


# Settings whose values are never repeated in an error message.
_SECRET_FIELDS = frozenset({"cloud_api_key", "serve_api_key"})


class _ConfigFile(TomlConfigSettingsSource):
    """The TOML config file, with errors that name the file. Unknown keys are refused: a typo such
    as `top-k = 5` was silently ignored, leaving the default in force."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        if path.exists() and not path.is_file():
            # pydantic-settings skips a path that is not a file without a word.
            raise ConfigError(f"the config file {path} is not a file")
        if not path.exists() and os.environ.get("SKIFF_CONFIG_FILE"):
            raise ConfigError(f"SKIFF_CONFIG_FILE names {path}, which does not exist")
        try:
            super().__init__(settings_cls, toml_file=path)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"the config file {path} is not valid TOML: {error}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"the config file {path} is not UTF-8 text (bad byte at {error.start})") from None
        except OSError as error:
            raise ConfigError(f"cannot read the config file {path}: {error.strerror or error}") from None
        known = settings_cls.model_fields
        unknown = [key for key in self.toml_data if key not in known]
        if unknown:
            problems = []
            for key in unknown[:5]:
                close = difflib.get_close_matches(key.replace("-", "_").lower(), known, n=1)
                problems.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"the config file {path} has unknown setting(s): {', '.join(problems)}; "
                              "`skiff config` lists them all")


def _source_of(field: str, given: dict[str, Any]) -> str:
    """Where a field's value came from, by the sources' precedence."""
    if field in given:
        return "given on the command line"
    variable = f"SKIFF_{field}".upper()
    if any(name.upper() == variable for name in os.environ):
        return f"from {variable}"
    return f"in {config_file_path()}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(error: ValidationError, given: dict[str, Any]) -> str:
    """pydantic's errors as one line each: key = value (where it came from): what is wrong."""
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:  # a check across fields
            lines.append(message)
            continue
        field = str(item["loc"][0])
        key = ".".join(str(part) for part in item["loc"])
        value = "********" if field in _SECRET_FIELDS else _short(item.get("input"))
        lines.append(f"{key} = {value} ({_source_of(field, given)}): {message}")
    return "; ".join(lines)


def _numeric(annotation: Any) -> bool:
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_numeric(arg) for arg in get_args(annotation))
    return annotation in (int, float)


class Settings(BaseSettings):
    """Every knob skiff has. Field names are the TOML keys; env vars are SKIFF_<NAME>."""

    model_config = SettingsConfigDict(
        env_prefix="SKIFF_",
        extra="ignore",
        validate_default=True,
        # TOML has inf and nan, and `max_file_mb = inf` passed gt=0 and then overflowed int().
        allow_inf_nan=False,
    )

    # Where things live.
    data_dir: Path = Field(default_factory=default_data_dir, description="index, answers database")
    cache_dir: Path = Field(default_factory=default_cache_dir, description="exported embedder, caches")

    # Local model (llama.cpp).
    model_path: Path | None = Field(
        default=None, description="GGUF file; empty means the bundled SmolLM2-135M-Instruct"
    )
    # Upper bounds where the value reaches C (llama.cpp, onnxruntime) as a fixed-size integer.
    n_ctx: int = Field(default=4096, ge=256, le=1 << 20, description="context window in tokens")
    n_threads: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1, le=1024)
    # A worked answer (arithmetic, steps) runs long: at 400 tokens the default model's GSM8K answers
    # were cut 18% of the time, at 512 2.5%, and 2.5 points more of them right (bench/RESULTS.md,
    # local+ on the main job). Answers from notes stay far shorter.
    max_tokens: int = Field(default=512, ge=1, description="most tokens generated per answer")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int = Field(default=0, ge=0, le=0xFFFFFFFF, description="llama.cpp's sampling seed (32 bits)")

    # Embedder and retrieval.
    embedder_backend: str = Field(default="onnx", pattern="^(onnx|torch)$")
    top_k: int = Field(default=5, ge=0, le=1000, description="note chunks given to the model")
    # all-MiniLM-L6-v2 was trained on 128-token inputs; longer chunks embed worse and slower.
    chunk_tokens: int = Field(default=128, ge=32, le=256, description="chunk size bound, embedder tokens")

    # Retrieval (assistant/retrieval.py): dense and BM25 candidates, fused by rank, then k selected.
    sift_candidates: int = Field(default=50, ge=1, le=1000, description="nearest chunks by vector, and the fused pool")
    lexical_candidates: int = Field(default=50, ge=0, le=1000, description="best chunks by BM25; 0 turns it off")
    selection: str = Field(default="rank", pattern="^(sift|rank)$",
                           description="how k chunks are chosen from the pool: SIFT, or the fused rank")
    sift_lambda: float = Field(default=0.01, gt=0, description="SIFT's λ′; larger tolerates near-repeats")

    # "My notes don't say" (assistant/abstention.py): said when the fitted probability that the notes
    # do not hold the answer passes this.
    # None: on with the model the check was fitted for (the default model), off with others,
    # whose own yes/no sits on another scale.
    abstain: bool | None = Field(default=None, description="say when the notes do not hold the answer")
    abstain_threshold: float = Field(
        default=0.2575,
        ge=0,
        le=1,
        description="probability the notes lack the answer (fitted, assistant/abstention.py)",
    )

    # Routing (router/uncertainty.py, router/coverage.py).
    router_prior: Path | None = Field(default=None, description="surrogate prior (.npz); empty = the shipped one")
    router_beta: float = Field(default=1.0, ge=0, description="optimism: score = gain mean + beta * std")
    cloud_share: float = Field(default=0.2, ge=0, le=1, description="share of questions meant for the cloud")
    # The cascade (router/draft_check.py): this share goes out before any draft, on the question
    # alone; the rest of the cloud share is the local drafts the check finds unsure. Small by
    # default, because before a draft the router picks at chance on notes questions.
    cloud_share_before_draft: float = Field(default=0.05, ge=0, le=1,
                                            description="share of questions sent to the cloud without a draft")
    check_drafts: bool = Field(default=True, description="check each local draft; escalate the unsure ones")
    draft_check_prior: Path | None = Field(default=None,
                                           description="draft check prior (.npz); empty = the model's shipped one")
    # Before a draft the router cannot tell where more local compute pays (it picks at chance on
    # notes questions), and an unsure draft is better served by the cloud when there is one: local+
    # runs on unsure drafts with no cloud to ask, or when asked for. A share here still sends that
    # share of questions to local+ on the router's score alone.
    local_plus_share: float = Field(default=0.0, ge=0, le=1,
                                    description="share sent to more local compute before a draft")

    # The local+ route (assistant/allocation.py): after the draft, a vote of it and samples, more notes
    # in context, or a test-time LoRA. None: only the methods measured to pay for the model in use
    # (its shipped table); a list switches those methods on whatever was measured; [] none.
    local_plus_methods: list[str] | None = Field(default=None, description="local+ methods: vote, context, lora")
    # A trained personal adapter helped unsure notes drafts and cost points on arithmetic (see the
    # README): false keeps it trained but answers without it, so turning it back on costs nothing.
    personal_adapter: bool = Field(default=True, description="put a trained `skiff tune` adapter under answers")
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
    tune_checkpoint_steps: int = Field(default=25, ge=1, description="`skiff tune` saves a checkpoint this often")

    # The TUI: binding id -> keys, e.g. {good = "ctrl+y", cancel = "escape,ctrl+c"} (ids in the README).
    keymap: dict[str, str] = Field(default_factory=dict, description="remap the TUI's key bindings by id")
    # Any of Textual's themes ("textual-dark", "nord", "gruvbox", ...). A theme picked in the TUI's
    # command palette is remembered and wins over this one.
    theme: str = Field(default="", description="the TUI's starting theme (Textual's theme names)")

    # Indexing.
    watch_notes: bool = Field(default=False, description="the TUI re-indexes folders as their files change")
    # At most a terabyte: int(max_file_mb * 2**20) + 1 is a read() size, which must fit in C.
    max_file_mb: float = Field(default=20.0, gt=0, le=1_000_000, description="larger files are skipped")

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)
    index_batch_chunks: int = Field(default=256, ge=1)

    # Cloud (assistant/cloud_prompt.py, cloud/client.py). The key is never printed or stored in history.
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

    # `skiff serve` (app/server/): an OpenAI-compatible endpoint for other tools, on this machine only.
    serve_host: str = Field(default="127.0.0.1", description="address to listen on; loopback unless --allow-remote")
    serve_port: int = Field(default=8764, ge=1, le=65535)  # 8765 is scripts/cloud-local.sh's
    serve_api_key: SecretStr | None = Field(default=None, description="prefer SKIFF_SERVE_API_KEY or the key file")
    serve_api_key_file: Path = Field(default_factory=lambda: default_config_dir() / "serve_api_key",
                                     description="written by the first `skiff serve`, mode 600")
    serve_queue_size: int = Field(default=8, ge=0, le=1024,
                                  description="answers that may wait for the local model; more get 429")
    serve_max_body_kb: int = Field(default=1024, ge=1, le=1 << 20, description="larger requests get 413")
    serve_sources_as_text: bool = Field(default=False,
                                        description="append the numbered sources to the answer's text")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = _ConfigFile(settings_cls, config_file_path())
        return (init_settings, env_settings, toml)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads `top_k = true` as 1: a silent wrong value, refused instead.
        if isinstance(value, bool) and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError("expected a number, got a boolean")
        return value

    @field_validator("data_dir", "cache_dir", "cloud_api_key_file", "serve_api_key_file", "model_path", "router_prior",
                     "draft_check_prior", mode="before")
    @classmethod
    def _paths(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            if "\x00" in value:
                raise ValueError("a path cannot hold a NUL character")
            if not value.strip():
                # Empty means the bundled one for these (as documented); it was Path("."), the
                # current folder, for every path setting.
                if info.field_name in ("model_path", "router_prior", "draft_check_prior"):
                    return None
                raise ValueError("the path is empty")
        return value

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def router_dir(self) -> Path:
        return self.data_dir / "router"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "skiff.sqlite3"

    @field_validator("local_plus_methods")
    @classmethod
    def _known_methods(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = [name for name in value if name not in ("vote", "context", "lora")]
        if unknown:
            raise ValueError(f"unknown local+ method(s) {', '.join(map(repr, unknown))}: use vote, context, lora")
        return list(dict.fromkeys(value))

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
        return read_key_file(self.cloud_api_key_file, "`skiff cloud key`")

    def serve_key(self) -> str | None:
        """The key `skiff serve` asks clients for: the setting (SKIFF_SERVE_API_KEY) first, else
        the key file written on the first `skiff serve`."""
        if self.serve_api_key is not None and self.serve_api_key.get_secret_value():
            return self.serve_api_key.get_secret_value()
        return read_key_file(self.serve_api_key_file, "`skiff serve --new-key`")

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
    """Settings with CLI-style overrides; None values mean 'not given' and are dropped.
    Raises ConfigError, whose message is fit to show as it is."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as error:
        raise ConfigError(_describe(error, given)) from None
    except SettingsError as error:
        # pydantic-settings parses list and table settings from SKIFF_* variables as JSON.
        field = re.search(r'field "(\w+)"', str(error))
        variable = f"SKIFF_{field.group(1)}".upper() if field else "a SKIFF_* variable"
        value = next((v for k, v in os.environ.items() if k.upper() == variable), None)
        shown = f" = {_short(value)}" if value is not None else ""
        raise ConfigError(f"{variable}{shown} is not valid JSON: list and table settings take JSON "
                          'there, e.g. SKIFF_PRIVATE_PATHS=\'["~/notes/private"]\' or '
                          'SKIFF_KEYMAP=\'{"good": "ctrl+y"}\'') from None
