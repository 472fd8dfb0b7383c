"""llmfleet: cost-optimal heterogeneous GPU fleets for LLM serving on Kubernetes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llmfleet")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
