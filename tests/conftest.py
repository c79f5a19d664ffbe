"""Test-wide settings: one intra-op thread (tiny tensors gain nothing from more, and the
multi-process tests would oversubscribe the 2 CI cores)."""
import torch

torch.set_num_threads(1)
