"""The cloud half of skiff: an OpenAI-compatible streaming client (arrives with the cloud issue).

Nothing here imports skiff.router, skiff.app or skiff.local.
"""
