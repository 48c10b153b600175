"""The cloud half of skiff: an OpenAI-compatible streaming client over httpx.

Nothing here imports skiff.router, skiff.app or skiff.local.
"""

from skiff.cloud.client import (
    CloudClient,
    CloudLimits,
    CloudStats,
    CloudTimeouts,
    Reachability,
    estimate_tokens,
)
from skiff.cloud.errors import (
    CloudBadResponse,
    CloudError,
    CloudRefused,
    CloudStreamBroken,
    CloudTimeout,
    CloudUnavailable,
    redact,
)

__all__ = [
    "CloudBadResponse",
    "CloudClient",
    "CloudError",
    "CloudLimits",
    "CloudRefused",
    "CloudStats",
    "CloudStreamBroken",
    "CloudTimeout",
    "CloudTimeouts",
    "CloudUnavailable",
    "Reachability",
    "estimate_tokens",
    "redact",
]
