"""``python -m llmfleet``: the same command line as the ``llmfleet`` console script."""

from llmfleet.cli import entrypoint

if __name__ == "__main__":
    entrypoint()
