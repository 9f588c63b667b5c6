"""Facts about this device that a TensorRT engine depends on: TensorRT version, GPU, L4T release.

An engine runs only on the TensorRT version and GPU (compute capability) it was built for;
JetPack is known by its L4T release (read by :mod:`edge.health.board`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class DeviceFacts:
    tensorrt_version: str
    device_name: str
    compute_capability: str  # "major.minor", e.g. "8.7" for Orin
    l4t_release: Optional[str]  # "R35.4.1"; None off a Jetson

    @property
    def jetpack(self) -> Optional[str]:
        return jetpack_of(self.l4t_release)


def jetpack_of(l4t_release: Optional[str]) -> Optional[str]:
    """``"R35.4.1"`` -> ``"5.1.2"`` (edge.health.board's table); None when not known."""
    from edge.health.board import Board, parse_l4t

    l4t = parse_l4t(l4t_release) if l4t_release else None
    return None if l4t is None else Board(model=None, l4t=l4t, l4t_source=None).jetpack


def l4t_release() -> Optional[str]:
    """This Jetson's L4T release as ``R35.4.1``, or None (see :func:`edge.health.board.detect_board`)."""
    from edge.health.board import detect_board

    return detect_board().release


def current_device(device_index: int = 0) -> DeviceFacts:
    """This machine's facts; needs TensorRT and pycuda (EngineError otherwise)."""
    from edge.inference.engines.cuda import device_facts
    from edge.inference.engines.trt_api import tensorrt_version

    name, capability = device_facts(device_index)
    return DeviceFacts(tensorrt_version(), name, capability, l4t_release())
