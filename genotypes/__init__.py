"""The genotype format: schema, YAML load/save, validation, and the shipped library."""
from genotypes.schema import (
    CONCAT_MODES, FPN_PATHS, GENOTYPE_VERSION, LEVELS, CellGenotype, ConcatMode, Edge,
    FPNGenotype, FPNLevelGenotype, FPNPath, Genotype, GenotypeMeta, NodeGenotype,
)
from genotypes.validate import (
    DEFAULT_LIMITS, NO_LIMITS, GenotypeError, GenotypeLimits, cell_graph, validate_genotype,
)
from genotypes.io import (
    genotype_from_dict, genotype_from_yaml, genotype_to_dict, genotype_to_yaml, list_library,
    load_genotype, save_genotype,
)
