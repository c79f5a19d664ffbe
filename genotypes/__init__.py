"""The generic genotype format: data model, YAML load/save, structural validation, the registry
of search-space schemas, and the shipped library."""
from genotypes.io import (
    genotype_from_dict, genotype_from_yaml, genotype_to_dict, genotype_to_yaml, list_library,
    load_genotype, save_genotype,
)
from genotypes.schema import (
    CONCAT_MODES, GENOTYPE_VERSION, CellGenotype, ConcatMode, Edge, Genotype, GenotypeMeta,
    NodeGenotype,
)
from genotypes.spaces import (
    DrawnEdge, SectionDrawing, SectionSchema, SpaceSchema, list_space_schemas,
    register_space_schema,
)
from genotypes.validate import (
    DEFAULT_LIMITS, NO_LIMITS, GenotypeError, GenotypeLimits, cell_graph, validate_genotype,
)
