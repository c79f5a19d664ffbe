"""What every run of the toolkit shares, whatever it trains or searches.

- :mod:`~nas_search.runtime.checkpoint`: atomic writes, ``.pt`` files saved and read safely;
- :mod:`~nas_search.runtime.rng`: seeding, RNG state capture and restore (exact resume);
- :mod:`~nas_search.runtime.distributed`: rank, world size, devices and CPU threads;
- :mod:`~nas_search.runtime.config`: the typed YAML config loader;
- :mod:`~nas_search.runtime.memory`: the activation-memory meter;
- :mod:`~nas_search.runtime.conv_backward`: a faster CPU backward for convolutions;
- :mod:`~nas_search.runtime.allocator`: glibc malloc settings that keep freed step memory;
- :mod:`~nas_search.runtime.errors`: :class:`NonFiniteLossError`;
- :mod:`~nas_search.runtime.lazy`: package re-exports imported on first use.

The names below import on first use, so that the config loader needs no torch.
"""
from nas_search.runtime.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "allocator": ("retain_freed_memory",),
    "checkpoint": ("NUMPY_ARRAY_GLOBALS", "CheckpointError", "atomic_path", "load_checkpoint",
                   "save_checkpoint"),
    "conv_backward": ("FastBackwardConv2d", "use_fast_conv_backward"),
    "config": ("ConfigError", "apply_overrides", "changed_settings", "dataclass_from_dict",
               "is_under", "load_yaml", "merge", "read_config_file", "refuse_changes",
               "replace_fields"),
    "distributed": ("DistContext", "available_device", "cpu_threads", "is_main", "rank",
                    "resolve_device", "world_size"),
    "errors": ("NonFiniteLossError",),
    "memory": ("ActivationMeter",),
    "rng": ("rng_state", "seed_everything", "set_rng_state"),
})
