"""Test-wide settings: one intra-op thread (tiny tensors gain nothing from more, and the
multi-process tests would oversubscribe the 2 CI cores); models more than one test file builds."""
import dataclasses

import pytest
import torch

from detectors.models.asfd import build_asfd, resolve_genotype
from search_spaces.schemas import FPN_KEY

torch.set_num_threads(1)


@pytest.fixture
def normalized_gate_d0() -> torch.nn.Module:
    """A narrow D0 whose AutoFEM-FPN has the ``normalized`` gate (a whole-map rms)."""
    genotype = resolve_genotype("asfd_paper_like")
    fpn = dataclasses.replace(genotype.sections[FPN_KEY], gate="normalized")
    genotype = dataclasses.replace(genotype, sections=genotype.sections | {FPN_KEY: fpn})
    torch.manual_seed(0)
    return build_asfd("D0", genotype, width=16).eval()
