"""skiff.router: the answer pipeline (retrieve -> decide -> generate -> record), its settings and
the decision seam. Usable as a library without a terminal:

    from skiff.router import Assistant
"""

from skiff.router.assistant import Answer, Assistant, Source
from skiff.router.policy import AlwaysLocal, Decision, RoutePolicy
from skiff.router.settings import Settings, load_settings

__all__ = ["Answer", "Assistant", "AlwaysLocal", "Decision", "RoutePolicy", "Settings", "Source", "load_settings"]
