"""``llmfleet power-agent``: run the node power agent until SIGTERM, then restore the default power
limits of the GPUs it capped. The chart runs it as a DaemonSet (helm/llmfleet/templates/power-agent.yaml).

Exit status: 0 after a clean shutdown; 1 when it cannot start (no NVML, i.e. no NVIDIA driver in
the container; no node name; an unreadable state file), with one line on stderr saying why.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from llmfleet.power.podresources import DEFAULT_SOCKET

DEFAULT_STATE_FILE = "/var/lib/llmfleet-power-agent/state.json"
# The port of the agent's /metrics; 9400 is dcgm-exporter's, so the next free-by-convention one.
DEFAULT_METRICS_PORT = 9402


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
    a.add_argument("-v", "--verbose", action="store_true")


def cmd_power_agent(args: argparse.Namespace) -> int:
    """Start NVML, the PodResources client and the Kubernetes client, then run the agent's loop in
    this thread until SIGTERM or SIGINT. Returns the exit status (module docstring)."""
    import pynvml

    from llmfleet.power.agent import PowerAgent
    from llmfleet.power.kube import KubeNodePods
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
        agent = PowerAgent(devices, KubeNodePods(args.node_name), podresources, args.state_file,
                           idle_grace_s=args.idle_grace_seconds)
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
