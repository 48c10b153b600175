"""The cloud half of skiff: an OpenAI-compatible streaming client over httpx.

Nothing here imports skiff.router, skiff.app or skiff.local.
"""

from skiff.cloud.client import CloudClient, CloudStats, CloudTimeouts, Reachability, estimate_tokens
from skiff.cloud.errors import CloudError, CloudRefused, CloudStreamBroken, CloudTimeout, CloudUnavailable, redact

__all__ = [
    "CloudClient", "CloudStats", "CloudTimeouts", "Reachability", "estimate_tokens",
    "CloudError", "CloudRefused", "CloudStreamBroken", "CloudTimeout", "CloudUnavailable", "redact",
]
