"""`skiff serve`: skiff behind an OpenAI-compatible endpoint on this machine (Starlette + uvicorn)."""

from skiff.app.server.api import create_app

__all__ = ["create_app"]
