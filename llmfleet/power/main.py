"""``llmfleet power-agent``: run the node power agent until SIGTERM, then restore the default power
limits of the GPUs it capped. The chart runs it as a DaemonSet (helm/llmfleet/templates/power-agent.yaml).

With ``--node-budget-watts`` (or ``$LLMFLEET_NODE_BUDGET_WATTS``) the agent also caps reactively:
the node's GPUs are one power domain with that budget, and the lowest-priority pods' GPUs are
capped first when their measured draw passes the controller's thresholds (llmfleet.power.reactive).

Exit status: 0 after a clean shutdown; 1 when it cannot start (no NVML, i.e. no NVIDIA driver in
the container; no node name; an unreadable state file), with one line on stderr saying why; 2 for
a bad option value (argparse).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading

from llmfleet.power.podresources import DEFAULT_SOCKET

DEFAULT_STATE_FILE = "/var/lib/llmfleet-power-agent/state.json"
# The port of the agent's /metrics; 9400 is dcgm-exporter's, so the next free-by-convention one.
DEFAULT_METRICS_PORT = 9402
ENV_NODE_BUDGET = "LLMFLEET_NODE_BUDGET_WATTS"
ENV_OVERSUBSCRIPTION = "LLMFLEET_POWER_OVERSUBSCRIPTION"


def _budget_watts(text: str) -> float:
    """--node-budget-watts: a finite number >= 0 (0: no budget, reactive capping off)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"node budget {text!r} must be a number of watts >= 0 (0 = off)")
    return value


def _oversubscription(text: str) -> float | None:
    """--oversubscription: "auto" (or empty) or a finite factor >= 1."""
    if text.strip().lower() in ("", "auto"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError(f"oversubscription {text!r} must be 'auto' or a factor >= 1")
    return value


def add_power_agent_arguments(a: argparse.ArgumentParser) -> None:
    """The options of ``llmfleet power-agent`` (kept here so cli.py only hooks the command in)."""
    a.add_argument("--node-name", default=os.environ.get("NODE_NAME", ""),
                   help="this node's name (default: $NODE_NAME, which the chart sets from spec.nodeName)")
    a.add_argument("--pod-resources-socket", default=DEFAULT_SOCKET, metavar="PATH",
                   help=f"kubelet PodResources socket (default: {DEFAULT_SOCKET})")
    a.add_argument("--state-file", default=DEFAULT_STATE_FILE, metavar="PATH",
                   help=f"where the GPUs the agent manages are remembered across restarts (default: {DEFAULT_STATE_FILE})")
    a.add_argument("--interval-seconds", type=float, default=10.0, help="seconds between passes (default 10)")
    a.add_argument("--idle-grace-seconds", type=float, default=30.0,
                   help="seconds a GPU stays capped after its pod is gone before the default limit is restored "
                        "(default 30)")
    a.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT,
                   help=f"port of the Prometheus /metrics endpoint, 0 for none (default {DEFAULT_METRICS_PORT})")
    a.add_argument("--node-budget-watts", type=_budget_watts, default=os.environ.get(ENV_NODE_BUDGET) or "0",
                   metavar="W",
                   help="power budget of the GPUs the agent manages on this node, W: their measured draw is kept "
                        "within it by capping the lowest-priority pods first (reactive capping, POLCA); 0 = off "
                        f"(default: ${ENV_NODE_BUDGET}, else 0)")
    a.add_argument("--oversubscription", type=_oversubscription,
                   default=os.environ.get(ENV_OVERSUBSCRIPTION) or "auto", metavar="F",
                   help="factor >= 1 by which the planned caps may exceed the node budget (1 = not oversubscribed: "
                        "caps stay as planned), or 'auto': the sum of the managed GPUs' planned caps and limits over the "
                        "budget, at least 1 "
                        f"(default: ${ENV_OVERSUBSCRIPTION}, else auto)")
    a.add_argument("-v", "--verbose", action="store_true")


def cmd_power_agent(args: argparse.Namespace) -> int:
    """Start NVML, the PodResources client and the Kubernetes client, then run the agent's loop in
    this thread until SIGTERM or SIGINT. Returns the exit status (module docstring)."""
    import pynvml

    from llmfleet.power.agent import PowerAgent
    from llmfleet.power.kube import KubeNodePods
    from llmfleet.power.nodebudget import NodeBudget
    from llmfleet.power.nvml import PynvmlDevices
    from llmfleet.power.podresources import PodResourcesClient

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.node_name:
        print("llmfleet: power-agent: no node name (set --node-name or NODE_NAME)", file=sys.stderr)
        return 1
    try:
        devices = PynvmlDevices()
    except pynvml.NVMLError as err:
        print(f"llmfleet: power-agent: NVML is not available ({type(err).__name__}: {err}); the agent needs "
              "the NVIDIA driver's libnvidia-ml.so.1 and the GPU devices in its container", file=sys.stderr)
        return 1
    podresources = PodResourcesClient(args.pod_resources_socket)
    try:
        budget = (NodeBudget(args.node_name, args.node_budget_watts, args.oversubscription)
                  if args.node_budget_watts > 0 else None)
        agent = PowerAgent(devices, KubeNodePods(args.node_name), podresources, args.state_file,
                           idle_grace_s=args.idle_grace_seconds, budget=budget)
    except ValueError as err:
        print(f"llmfleet: power-agent: {err}", file=sys.stderr)
        return 1
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        agent.run(stop, interval_s=args.interval_seconds)
    finally:
        podresources.close()
        devices.close()
    return 0
