"""The node power agent (``llmfleet power-agent``, DESIGN.md §2 and §8).

One agent runs per GPU node (a DaemonSet of the chart). It reads the planned per-GPU power cap
that the operator renders as the pod annotation ``llmfleet.dev/gpu-power-limit-watts``, maps each
pod to the GPUs the kubelet gave it through the kubelet PodResources API, and sets those GPUs'
power limits through NVML within each device's allowed range.

Modules, each one thing:
- ``nvml``: what the agent needs from NVML, as an interface; the real binding (nvidia-ml-py) and
  a fake that enforces device constraints the way NVML does (for tests and machines without GPUs).
- ``podresources``: the kubelet PodResources v1 gRPC client (code generated from kubelet's
  ``api.proto`` in ``proto/``).
- ``kube``: the agent's few Kubernetes calls (list the node's pods, annotate a pod, record an Event).
- ``agent``: the state machine: desired caps, apply and read back, restore, second-writer detection.
- ``main``: the ``llmfleet power-agent`` command.
- ``reactive``: reactive capping of an oversubscribed power domain, lowest tier first (POLCA's two
  thresholds with hysteresis): measured draw in, new per-GPU caps out.
- ``nodebudget``: one node as such a domain (``llmfleet power-agent --node-budget-watts``): the
  agent's pods as the controller's groups, tiers from the pods' ``spec.priority``, the draw from
  NVML. The agent runs the controller every pass when a budget is set; domains larger than a node
  (a rack, a row) are not wired: the operator does not read GPU draw.
"""
