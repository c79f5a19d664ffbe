"""Generic differentiable architecture search engine (PC-DARTS + top-1 Gumbel tree cells)."""
