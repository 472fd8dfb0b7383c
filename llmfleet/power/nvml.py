"""What the power agent needs from NVML, behind one interface, with two implementations:

- ``PynvmlDevices``: the real thing, NVIDIA's Python binding ``nvidia-ml-py`` (``import pynvml``),
  which loads ``libnvidia-ml.so.1`` from the driver;
- ``FakeDevices``: GPUs in memory that accept and refuse limits exactly as the NVML API reference
  documents, raising the same ``pynvml.NVMLError_*`` classes, and that can simulate another writer
  and an out-of-band cap. Used by the tests and on machines without an NVIDIA GPU.

Units are NVML's: every power value is an integer number of milliwatts (``_mw``).

NVML semantics relied on (NVML API reference, "Device Queries" and "Device Commands";
nvidia-ml-py 13.x mirrors them one to one):
- ``nvmlDeviceGetPowerManagementLimitConstraints`` → [min, max] mW the management limit may take;
- ``nvmlDeviceGetPowerManagementDefaultLimit`` → the limit the GPU boots with (the board's TDP on
  data-centre parts, e.g. 700 W on H100/H200 SXM);
- ``nvmlDeviceGetPowerManagementLimit`` → the management limit last set (by anyone);
- ``nvmlDeviceGetEnforcedPowerLimit`` → the limit the GPU actually enforces: the lowest of the
  management limit and limits set elsewhere (out-of-band, e.g. by the BMC);
- ``nvmlDeviceSetPowerManagementLimit(handle, mW)`` → NVML_ERROR_INVALID_ARGUMENT when the value is
  outside the constraints, NVML_ERROR_NO_PERMISSION without root (CAP_SYS_ADMIN in a container);
  the limit is not persistent across reboots or driver unloads;
- ``nvmlDeviceGetPowerUsage`` → current draw, mW.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import pynvml


@runtime_checkable
class PowerDevices(Protocol):
    """The GPUs of this node as the power agent sees them, addressed by UUID (``GPU-…``).

    Every method raises ``pynvml.NVMLError`` (a subclass per NVML return code) on failure, e.g.
    ``NVMLError_NotFound`` for an unknown UUID, ``NVMLError_InvalidArgument`` for a limit out of
    range, ``NVMLError_NoPermission`` when the process may not set limits.
    """

    def uuids(self) -> list[str]:
        """UUIDs of all GPUs, in NVML index order (so ``uuids()[i]`` is GPU index i)."""

    def limit_constraints_mw(self, uuid: str) -> tuple[int, int]:
        """(minimum, maximum) management limit the GPU accepts, mW."""

    def default_limit_mw(self, uuid: str) -> int:
        """The management limit the GPU boots with, mW."""

    def management_limit_mw(self, uuid: str) -> int:
        """The management limit currently set (by this agent or anyone else), mW."""

    def enforced_limit_mw(self, uuid: str) -> int:
        """The limit the GPU enforces now (≤ the management limit when something else caps it), mW."""

    def set_limit_mw(self, uuid: str, limit_mw: int) -> None:
        """Set the management limit, mW. Raises NVMLError_InvalidArgument outside the constraints."""

    def power_usage_mw(self, uuid: str) -> int:
        """Current power draw, mW."""


class PynvmlDevices:
    """``PowerDevices`` over the real NVML (nvidia-ml-py). ``nvmlInit`` runs in the constructor
    (raises ``NVMLError_LibraryNotFound`` / ``NVMLError_DriverNotLoaded`` where there is no NVIDIA
    driver); call ``close()`` for ``nvmlShutdown``."""

    def __init__(self) -> None:
        pynvml.nvmlInit()
        self._handles: dict[str, object] = {}

    def close(self) -> None:
        """Release NVML (``nvmlShutdown``)."""
        pynvml.nvmlShutdown()

    def _handle(self, uuid: str):
        if uuid not in self._handles:
            self._handles[uuid] = pynvml.nvmlDeviceGetHandleByUUID(uuid)
        return self._handles[uuid]

    def uuids(self) -> list[str]:
        return [pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
                for i in range(pynvml.nvmlDeviceGetCount())]

    def limit_constraints_mw(self, uuid: str) -> tuple[int, int]:
        low, high = pynvml.nvmlDeviceGetPowerManagementLimitConstraints(self._handle(uuid))
        return int(low), int(high)

    def default_limit_mw(self, uuid: str) -> int:
        return int(pynvml.nvmlDeviceGetPowerManagementDefaultLimit(self._handle(uuid)))

    def management_limit_mw(self, uuid: str) -> int:
        return int(pynvml.nvmlDeviceGetPowerManagementLimit(self._handle(uuid)))

    def enforced_limit_mw(self, uuid: str) -> int:
        return int(pynvml.nvmlDeviceGetEnforcedPowerLimit(self._handle(uuid)))

    def set_limit_mw(self, uuid: str, limit_mw: int) -> None:
        pynvml.nvmlDeviceSetPowerManagementLimit(self._handle(uuid), int(limit_mw))

    def power_usage_mw(self, uuid: str) -> int:
        return int(pynvml.nvmlDeviceGetPowerUsage(self._handle(uuid)))


@dataclass
class FakeGpu:
    """One simulated GPU. ``min_mw``/``max_mw``/``default_mw`` as NVML reports them; ``limit_mw`` the
    management limit (starts at the default, as after boot); ``out_of_band_cap_mw`` a limit set
    outside NVML's management limit (a BMC cap), which lowers the enforced limit only.

    Power readings: ``usage_mw`` is the reading as given; with ``demand_mw`` set (the draw the GPU's
    work would take uncapped) the reading is min(demand, enforced limit) instead: the power limit
    "defines the upper boundary for the card's power draw", and at it "the power management
    algorithm kicks in" (NVML reference, nvmlDeviceGetPowerManagementLimit; the enforced limit is
    the "effective power limit that the driver enforces after taking into account all limiters");
    ``usage_error``, an NVML return code (e.g.
    ``pynvml.NVML_ERROR_GPU_IS_LOST``), makes the reading fail with that code's exception class."""

    uuid: str
    min_mw: int
    max_mw: int
    default_mw: int
    limit_mw: int | None = None
    usage_mw: int = 0
    out_of_band_cap_mw: int | None = None
    demand_mw: int | None = None
    usage_error: int | None = None

    def __post_init__(self) -> None:
        if not self.min_mw <= self.default_mw <= self.max_mw:
            raise ValueError(f"FakeGpu {self.uuid}: default_mw {self.default_mw} outside "
                             f"[{self.min_mw}, {self.max_mw}]")
        if self.limit_mw is None:
            self.limit_mw = self.default_mw


def h100_sxm(uuid: str) -> FakeGpu:
    """A fake H100 SXM with the range NVML reports for it: Min 200 W, Max 700 W, Default 700 W
    (`nvidia-smi -q -d power` on a 700 W H100 SXM node, the verified source of the H100-SXM row of
    llmfleet/catalog/gpus.csv: stackhpc/ansible-slurm-appliance PR #975)."""
    return FakeGpu(uuid=uuid, min_mw=200_000, max_mw=700_000, default_mw=700_000)


class FakeDevices:
    """``PowerDevices`` in memory, refusing what NVML refuses with the same exception classes.

    ``writes`` counts successful ``set_limit_mw`` calls per UUID (what a test asserts to show that
    the agent did not write). ``external_set`` is a second writer (e.g. an administrator's
    ``nvidia-smi -pl``): it changes the management limit without going through the agent."""

    def __init__(self, gpus: list[FakeGpu]):
        self.gpus = {g.uuid: g for g in gpus}
        self.writes: dict[str, int] = {g.uuid: 0 for g in gpus}
        self.permitted = True  # False: every set fails with NVML_ERROR_NO_PERMISSION, as for non-root
        self._lock = threading.Lock()

    def _gpu(self, uuid: str) -> FakeGpu:
        if uuid not in self.gpus:
            # nvmlDeviceGetHandleByUUID: NVML_ERROR_NOT_FOUND "if uuid does not match a valid device"
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return self.gpus[uuid]

    def uuids(self) -> list[str]:
        return list(self.gpus)

    def close(self) -> None:
        """Nothing to release (the real one calls nvmlShutdown)."""

    def limit_constraints_mw(self, uuid: str) -> tuple[int, int]:
        g = self._gpu(uuid)
        return g.min_mw, g.max_mw

    def default_limit_mw(self, uuid: str) -> int:
        return self._gpu(uuid).default_mw

    def management_limit_mw(self, uuid: str) -> int:
        return self._gpu(uuid).limit_mw

    def enforced_limit_mw(self, uuid: str) -> int:
        g = self._gpu(uuid)
        if g.out_of_band_cap_mw is None:
            return g.limit_mw
        return min(g.limit_mw, g.out_of_band_cap_mw)

    def _write(self, uuid: str, limit_mw: int) -> None:
        g = self._gpu(uuid)
        if not self.permitted:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)
        if not isinstance(limit_mw, int) or not g.min_mw <= limit_mw <= g.max_mw:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        g.limit_mw = limit_mw

    def set_limit_mw(self, uuid: str, limit_mw: int) -> None:
        with self._lock:
            self._write(uuid, limit_mw)
            self.writes[uuid] += 1

    def external_set(self, uuid: str, limit_mw: int) -> None:
        """Another process sets the limit (same rules as NVML; not counted in ``writes``)."""
        with self._lock:
            self._write(uuid, limit_mw)

    def power_usage_mw(self, uuid: str) -> int:
        g = self._gpu(uuid)
        if g.usage_error is not None:
            raise pynvml.NVMLError(g.usage_error)
        if g.demand_mw is not None:
            return min(g.demand_mw, self.enforced_limit_mw(uuid))
        return g.usage_mw
