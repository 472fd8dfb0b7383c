"""The Pod Security Standards' "baseline" and "restricted" rules, as a checker for rendered pods.

Written from the standard (kubernetes.io/docs/concepts/security/pod-security-standards, the
policy table of each profile). The local control plane (1.20) predates Pod Security Admission,
so the rules are checked here; `test_render.py` shows the checker refusing pods that break each rule.
"""

from __future__ import annotations

BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t"}


def _containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]


def baseline_violations(pod: dict) -> list[str]:
    """Rules of the "baseline" profile that the pod spec ``pod`` breaks (empty: it passes)."""
    out = []
    for ns in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(ns):
            out.append(f"{ns} must not be true")
    psc = pod.get("securityContext") or {}
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("hostProcess pods are not allowed")
    for v in pod.get("volumes", []):
        if "hostPath" in v:
            out.append(f"volume {v.get('name')}: hostPath is not allowed")
    for sysctl in psc.get("sysctls", []):
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"sysctl {sysctl.get('name')} is not in the safe set")
    contexts = [("pod", psc)] + [(c.get("name"), c.get("securityContext") or {}) for c in _containers(pod)]
    for name, sc in contexts:
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"{name}: seccompProfile Unconfined is not allowed")
        se = sc.get("seLinuxOptions") or {}
        if se.get("type") not in SELINUX_TYPES or se.get("user") or se.get("role"):
            out.append(f"{name}: seLinuxOptions outside the allowed set")
    for c in _containers(pod):
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"container {c.get('name')}: privileged")
        added = set((sc.get("capabilities") or {}).get("add", []))
        if added - BASELINE_CAPABILITIES:
            out.append(f"container {c.get('name')}: capabilities {sorted(added - BASELINE_CAPABILITIES)} added")
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"container {c.get('name')}: procMount must be Default")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"container {c.get('name')}: hostProcess")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                out.append(f"container {c.get('name')}: hostPort {port['hostPort']}")
    return out


def restricted_violations(pod: dict) -> list[str]:
    """Rules of the "restricted" profile (which includes baseline) that ``pod`` breaks."""
    out = baseline_violations(pod)
    psc = pod.get("securityContext") or {}
    for v in pod.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {v.get('name')}: type {sorted(kinds - RESTRICTED_VOLUMES)} not allowed")
    if psc.get("runAsUser") == 0:
        out.append("pod: runAsUser 0")
    for c in _containers(pod):
        sc = c.get("securityContext") or {}
        name = c.get("name")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"container {name}: allowPrivilegeEscalation must be false")
        if not (sc.get("runAsNonRoot") is True or (psc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is not False)):
            out.append(f"container {name}: runAsNonRoot must be true")
        if sc.get("runAsUser") == 0:
            out.append(f"container {name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"container {name}: seccompProfile must be RuntimeDefault or Localhost")
        caps = sc.get("capabilities") or {}
        if "ALL" not in caps.get("drop", []):
            out.append(f"container {name}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"container {name}: only NET_BIND_SERVICE may be added")
    return out
