"""Errors a training or search run stops with."""
from __future__ import annotations


class NonFiniteLossError(FloatingPointError):
    """A NaN or infinite loss or epoch metric; the message says where, and the last checkpoint
    written is the last good state."""
