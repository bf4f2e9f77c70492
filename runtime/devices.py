"""Device choice for training and evaluation: one place that turns "auto"/"cpu"/"cuda" into a
torch.device (with a clear error when CUDA is asked for and absent), and the CUDA speed options
(channels_last memory format, bf16 autocast) as switches that are no-ops on the CPU."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch
from torch import nn

from onnxwootz.errors import BadSpecError, DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available else cpu; "cuda" without a GPU is a DeviceError."""
    choice = device.strip().lower()
    if choice not in DEVICE_CHOICES:
        raise BadSpecError(f"unknown device '{device}'; use one of: {', '.join(DEVICE_CHOICES)}")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was asked for but torch sees no CUDA GPU (use --device cpu or auto)")
    return torch.device(choice)


@dataclass(frozen=True)
class CudaOptions:
    """Speed switches that only apply on CUDA: NHWC memory layout and bf16 autocast."""

    channels_last: bool = True
    bf16_autocast: bool = True


def autocast_context(device: torch.device, enabled: bool = True) -> ContextManager[object]:
    """bf16 autocast on CUDA when enabled (and supported); a null context otherwise."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_module(module: nn.Module, device: torch.device, options: CudaOptions = CudaOptions()) -> nn.Module:
    """Move a module to the device, in channels_last layout on CUDA when asked."""
    module = module.to(device)
    if device.type == "cuda" and options.channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module


def prepare_input(batch: torch.Tensor, device: torch.device, options: CudaOptions = CudaOptions()) -> torch.Tensor:
    """Move an input batch to the device (non-blocking), channels_last for 4-D inputs on CUDA."""
    batch = batch.to(device, non_blocking=True)
    if device.type == "cuda" and options.channels_last and batch.dim() == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch
