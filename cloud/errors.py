"""What can go wrong with a cloud endpoint, each saying what to do about it."""

from __future__ import annotations

REDACTED = "[key hidden]"


def redact(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` hidden (a server may echo a bad key back), and the
    start of it that ends a text cut short: a server's message is shown to its first N characters."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, REDACTED)
        for length in range(len(secret) - 1, 5, -1):
            if text.endswith(secret[:length]):
                return text[:-length] + REDACTED
    return text


class KeyFilter:
    """The API key hidden in a streamed answer (a careless gateway may answer with it), even split
    over pieces: only a tail that could begin the key waits for the next piece."""

    def __init__(self, secret: str) -> None:
        self.secret = secret if len(secret) >= 8 else ""
        self.held = ""

    def feed(self, piece: str) -> str:
        if not self.secret:
            return piece
        text = (self.held + piece).replace(self.secret, REDACTED)
        hold = next((n for n in range(min(len(text), len(self.secret) - 1), 0, -1)
                     if self.secret.startswith(text[-n:])), 0)
        self.held = text[len(text) - hold:]
        return text[:len(text) - hold]

    def flush(self) -> str:
        held, self.held = self.held, ""
        return redact(held, self.secret)  # a start of the key that ends the answer is hidden too


class CloudError(RuntimeError):
    """Base class; the message is safe to show (no key in it)."""


class CloudUnavailable(CloudError):
    """Could not get an answer started: unreachable, or 429/5xx on every try."""


class CloudTimeout(CloudError):
    """The server accepted the request but no token came within the first-token timeout."""


class CloudRefused(CloudError):
    """The server refused the request (401/403/404 and other 4xx): retrying will not help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status

    @classmethod
    def for_status(cls, status: int, base_url: str, model: str, detail: str) -> CloudRefused:
        said = f" (the server said: {detail})" if detail else ""
        if status == 401:
            fix = ("the API key was refused: set SKIFF_CLOUD_API_KEY or run `skiff cloud key` "
                   "with the endpoint's key")
        elif status == 403:
            fix = "the API key is not allowed to use this endpoint or model: check the key's permissions"
        elif status == 404:
            fix = (f"not found: check that cloud_base_url ({base_url}) ends in /v1 and that the endpoint "
                   f"serves the model {model!r} (`skiff cloud check` lists what it serves)")
        else:
            fix = "the endpoint rejected the request"
        return cls(f"cloud endpoint refused ({status}): {fix}{said}", status)


class CloudStreamBroken(CloudError):
    """The answer started but did not finish; the text already received is still valid."""

    def __init__(self, message: str, partial: bool) -> None:
        super().__init__(message)
        self.partial = partial


class CloudBadResponse(CloudStreamBroken):
    """The server sent something this client will not read: a line, event, answer or body over
    its limit (`CloudLimits`), a body that is not an event stream, or a compression it does not
    decode. Before the first token (partial False) the caller may fall back; after it, the text
    already received is still valid, as with any broken stream."""
