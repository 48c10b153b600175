"""Property-based tests (hypothesis) of the config file and SKIFF_* variables through
load_settings: any value is taken as written or refused with an error that names the field, the
file and what was wrong. Deterministic (derandomize=True, no example database), like
test_properties.py.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from pathlib import Path

import pytest
from annotated_types import Ge, Gt, Le, Lt
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import SecretStr
from skiff.config.settings import ConfigError, Settings, load_settings

from conftest import deterministic


# -- config ------------------------------------------------------------------------------------

KINDS = {int: "int", float: "float", bool: "bool", str: "str", Path: "path", list[str]: "list", dict[str, str]: "dict",
         SecretStr: "secret", str | None: "str", Path | None: "optional path", float | None: "float",
         SecretStr | None: "secret"}
FIELDS = sorted(name for name, info in Settings.model_fields.items() if info.annotation in KINDS)
TRUE_WORDS, FALSE_WORDS = {"1", "on", "t", "true", "y", "yes"}, {"0", "off", "f", "false", "n", "no"}


def _toml_string(text: str) -> str:
    escaped = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or c in '"\\\x7f' else c for c in text)
    return f'"{escaped}"'


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


toml_scalars = st.one_of(
    st.integers(-5, 300), st.integers(-(2**70), 2**70),
    st.floats(-10, 10), st.floats(),
    st.booleans(),
    st.text(max_size=16),
    st.sampled_from(["", "  ", "7", " 42 ", "1e3", "2.5", "true", "no", "Off", "onnx", "torch", "nan", "inf", "-1",
                     "0x10", "1_000", "~/x", "a\x00b", "sk-secret-value"]),
    st.dates(), st.datetimes(),
)
toml_values = st.recursive(
    toml_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5)


def _bounds_ok(info, number) -> bool:
    for bound in info.metadata:
        if (
            (isinstance(bound, Ge) and not number >= bound.ge)
            or (isinstance(bound, Gt) and not number > bound.gt)
            or (isinstance(bound, Le) and not number <= bound.le)
            or (isinstance(bound, Lt) and not number < bound.lt)
        ):
            return False
    return True


def expected(field: str, value):
    """What the setting must be after `field = value`, or ConfigError if it must be refused; None
    where lax parsing may go either way (a numeric string): then only consistency is checked."""
    info = Settings.model_fields[field]
    kind = KINDS[info.annotation]
    if kind in ("int", "float"):
        if isinstance(value, str):
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return ConfigError
        if kind == "int" and isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            return ConfigError
        if kind == "int" and isinstance(value, float) and abs(value) >= 2**63:
            return ConfigError  # pydantic reads a float as an int only within 64 bits; refused clearly
        try:
            number = int(value) if kind == "int" else float(value)
        except OverflowError:
            return ConfigError
        if isinstance(number, float) and not math.isfinite(number):
            return ConfigError
        return number if _bounds_ok(info, number) else ConfigError
    if kind == "bool":
        if isinstance(value, bool):
            return value
        return None if isinstance(value, (str, int, float)) else ConfigError
    if kind in ("str", "secret"):
        if not isinstance(value, str):
            return ConfigError
        if field == "embedder_backend" and value not in ("onnx", "torch"):
            return ConfigError
        return value
    if kind in ("path", "optional path"):
        if not isinstance(value, str) or "\x00" in value:
            return ConfigError
        if not value.strip():
            return None if kind == "optional path" else ConfigError
        return Path(value)
    if kind == "list":
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else ConfigError
    return value if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()) else ConfigError


class _Config:
    """A SKIFF_HOME of its own with nothing else of SKIFF_* in the environment."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def load(self, toml: str | bytes | None = None, env: dict[str, str] | None = None):
        patch = pytest.MonkeyPatch()
        try:
            for name in [n for n in os.environ if n.upper().startswith("SKIFF_")]:
                patch.delenv(name)
            patch.setenv("SKIFF_HOME", str(self.home))
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            path = self.home / "config.toml"
            path.unlink(missing_ok=True)
            if toml is not None:
                path.write_bytes(toml.encode() if isinstance(toml, str) else toml)
            return load_settings()
        finally:
            patch.undo()


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return _Config(tmp_path_factory.mktemp("skiff-home"))


def _check_refusal(error: ConfigError, field: str, value) -> None:
    message = str(error)
    assert field in message and "Traceback" not in message
    if field == "cloud_api_key" and isinstance(value, str) and len(value) > 3:
        assert value not in message  # a secret is never echoed


@deterministic(500)
@given(field=st.sampled_from(FIELDS), value=toml_values)
@example(field="top_k", value=True)  # was read as 1
@example(field="max_file_mb", value=math.inf)  # passed gt=0, then overflowed int()
@example(field="data_dir", value="")  # was Path("."), the current folder
@example(field="model_path", value="")  # "empty means the bundled model" was Path(".")
@example(field="cloud_api_key", value=["sk-secret-value"])  # the refusal must not echo it
@example(field="seed", value=2**40)  # llama.cpp takes 32 bits
def test_any_toml_value_is_taken_as_written_or_refused_clearly(config, field, value):
    want = expected(field, value)
    try:
        settings_ = config.load(f"{field} = {toml_value(value)}\n")
    except ConfigError as error:
        assert want is None or want is ConfigError, (field, value, want, error)
        _check_refusal(error, field, value)
        return
    got = getattr(settings_, field)
    if isinstance(got, SecretStr):
        got = got.get_secret_value()
    if want is None:
        # A string read as a number or a boolean must be that string's value.
        kind = KINDS[Settings.model_fields[field].annotation]
        if kind == "bool":
            word = str(value).strip().lower()
            assert (word in TRUE_WORDS and got is True) or (word in FALSE_WORDS and got is False) \
                or (not isinstance(value, str) and value in (0, 1) and got is bool(value)), (value, got)
        elif kind in ("int", "float"):
            assert float(value.strip().replace("_", "")) == got, (value, got)
        elif kind == "optional path":
            assert got is None
        return
    assert want is not ConfigError, (field, value, got)
    assert got == want and type(got) is type(want), (field, value, got, want)


@pytest.mark.parametrize("field,value", [
    ("seed", 2**40),  # llama.cpp's seed is 32 bits
    ("n_ctx", 2**40), ("n_threads", 10**6),  # C ints and thread pools
    ("max_file_mb", 1e300),  # int(max_file_mb * 2**20) + 1 is a read() size: OverflowError
    ("top_k", 10**12),  # chromadb's n_results
    ("max_file_mb", math.inf), ("temperature", math.nan), ("top_k", True),
])
def test_values_that_fail_later_are_refused_up_front(config, field, value):
    # The bounds the oracle above reads off the fields must be there in the first place.
    with pytest.raises(ConfigError, match=field):
        config.load(f"{field} = {toml_value(value)}\n")


@deterministic(150)
@given(key=st.text(min_size=1, max_size=20).filter(lambda k: k not in Settings.model_fields), value=toml_scalars)
@example(key="top-k", value=5)  # a typo was ignored, leaving the default in force
def test_unknown_keys_are_refused_by_name(config, key, value):
    with pytest.raises(ConfigError) as caught:
        config.load(f"{_toml_string(key)} = {toml_value(value)}\n")
    assert repr(key) in str(caught.value)


@deterministic(150)
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
@example(data=b"\xff\xfe = 1\n")  # UnicodeDecodeError, without the file's name
@example(data=b"x = 1\nx = 2\n")
def test_a_garbled_config_file_is_a_config_error_naming_the_file(config, data):
    try:
        config.load(data)
    except ConfigError as error:
        assert "config.toml" in str(error) or any(f in str(error) for f in FIELDS), error


@deterministic(300)
@given(field=st.sampled_from(FIELDS), text=st.text(alphabet=st.characters(blacklist_characters="\x00",
                                                                          blacklist_categories=("Cs",)), max_size=20)
       | st.sampled_from(["", " 7 ", "true", "inf", "nan", "1e400", "[1]", '["a"]', '{"a": "b"}', "-1", "0"]))
def test_any_environment_value_is_taken_as_written_or_refused_clearly(config, field, text):
    variable = f"SKIFF_{field.upper()}"
    try:
        settings_ = config.load(env={variable: text})
    except ConfigError as error:
        assert variable in str(error) and "Traceback" not in str(error), error
        return
    got = getattr(settings_, field)
    kind = KINDS[Settings.model_fields[field].annotation]
    if isinstance(got, SecretStr):
        got = got.get_secret_value()
    if kind in ("int", "float"):
        assert float(text.strip().replace("_", "")) == got, (text, got)
        assert math.isfinite(got)
    elif kind == "bool":
        assert got is (text.strip().lower() in TRUE_WORDS) and text.strip().lower() in TRUE_WORDS | FALSE_WORDS
    elif kind == "list" or kind == "dict":
        assert got == json.loads(text)
    elif kind == "optional path":
        assert got == (Path(text) if text.strip() else None)
    elif kind == "path":
        assert got == Path(text) and text.strip()
    else:
        assert got == text
