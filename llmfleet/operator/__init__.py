"""The llmfleet Kubernetes operator (kopf). ``kopf run -m llmfleet.operator`` loads the handlers;
``llmfleet operator`` does the same with command-line options."""

from llmfleet.operator import handlers  # noqa: F401  (registers the kopf handlers)
