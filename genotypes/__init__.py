"""The genotype format: schema, YAML load/save, validation, and the shipped library."""
from genotypes.schema import (
    CONCAT_MODES, FPN_PATHS, GENOTYPE_VERSION, LEVELS, SEARCH_MODES, CellGenotype, ConcatMode,
    Edge, FPNGenotype, FPNLevelGenotype, FPNPath, Genotype, GenotypeMeta, NodeGenotype, SearchMode,
)
