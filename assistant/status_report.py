"""`skiff status` and `Assistant.status()`: where skiff keeps things and what state they are in."""

from __future__ import annotations

from skiff.local.llm import read_model_info
from skiff.local.recovery import disk_full
from skiff.assistant.model_choice import current_model
from skiff.config.settings import config_file_path


def describe(assistant) -> dict:
    settings = assistant.settings
    choice = current_model(settings)
    try:
        model_path = assistant.model_path
        model = read_model_info(model_path).as_dict() if model_path.is_file() else {"error": f"not found: {model_path}"}
    except Exception as error:  # noqa: BLE001 - status must report, not crash
        model = {"error": str(error)}
    index_error = None
    try:
        files, chunks = assistant.index_size()
    except Exception as error:  # noqa: BLE001 - a full disk can keep chromadb from opening: said, not raised
        files = chunks = 0
        full = disk_full(error, settings.index_dir)
        index_error = f"cannot be opened: {full or str(error).strip().splitlines()[0]}"
    indexed = settings.index_dir.exists()
    cloud = "none"
    if settings.cloud_configured:
        cloud = f"{settings.cloud_base_url} ({settings.cloud_model})" + (" — offline mode" if settings.offline else "")
    try:
        personal = assistant.personal_status()
        adapter = {"state": personal.state, "steps_done": personal.steps_done, "steps_total": personal.steps_total,
                   "note": personal.describe(), "switched_on": settings.personal_adapter}
    except Exception as error:  # noqa: BLE001 - e.g. no model installed: said, not raised
        adapter = {"state": "unknown", "steps_done": 0, "steps_total": 0, "note": f"unknown ({error})"}
    return {
        "config_file": str(config_file_path()),
        "config_file_exists": config_file_path().is_file(),
        "data_dir": str(settings.data_dir),
        "cache_dir": str(settings.cache_dir),
        "model": model,
        "model_choice": {"name": choice.name, "why": choice.why},
        "index": {"files": files, "chunks": chunks, "roots": assistant.notes.roots() if indexed else [],
                  **({"error": index_error} if index_error else {})},
        "personal_adapter": adapter,
        "answers": assistant.records.count() if settings.database_path.exists() else 0,
        "cloud": cloud,
        "offline": settings.offline,
    }
