"""The genotype format: YAML round trip, validation errors (each names its field), library."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import networkx as nx
import pytest

from asfd_cli.main import main
from genotypes import (
    CellGenotype, DrawnEdge, Edge, Genotype, GenotypeError, GenotypeLimits, GenotypeMeta,
    NodeGenotype, SectionDrawing, SectionSchema, SpaceSchema, cell_graph, genotype_from_dict,
    genotype_to_dict, genotype_to_yaml, list_library, list_space_schemas, load_genotype,
    register_space_schema, save_genotype, spaces, validate_genotype,
)
from search_spaces.schemas import (
    FPN_KEY, LEVELS, PAPER_OP_SETS, FPNGenotype, FPNLevelGenotype, FPNSection, fpn_of,
    paper_ops,
)

# The paper's S_CPM (Sec. 3.2); S_FPN is its first six ops.
S_CPM = ("conv_1x1", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3_r2", "dil_conv_3x3_r3",
         "dil_conv_5x5_r2", "conv_1x3", "conv_3x1", "conv_1x3_3x1", "conv_1x5", "conv_5x1",
         "conv_1x5_5x1")
S_FPN = S_CPM[:6]


def tree(*edges: tuple[int, str], concat: str = "cat_leaf") -> CellGenotype:
    return CellGenotype(nodes=tuple(NodeGenotype((Edge(p, op),)) for p, op in edges),
                        concat=concat)


def fpn() -> FPNGenotype:
    levels = {}
    for i, name in enumerate(LEVELS):
        td = None if name == "P7" else "sep_conv_5x5"
        bu = None if name == "P2" else "dil_conv_3x3_r2"
        paths = ["same"] + (["td"] if td else []) + (["bu"] if bu else [])
        levels[name] = FPNLevelGenotype("conv_1x1", td, bu,
                                        {p: 1 / len(paths) for p in paths})
    return FPNGenotype(levels)


@pytest.fixture
def genotype() -> Genotype:
    cells = {"P3": tree((0, "sep_conv_3x3"), (1, "conv_1x3"), (1, "dil_conv_5x5_r2"),
                        (0, "conv_1x1")),
             "P4": tree((0, "conv_3x1"), (0, "conv_1x5_5x1"), (2, "sep_conv_5x5"),
                        (3, "conv_5x1"))}
    chain = tree((0, "conv_1x1"), (1, "sep_conv_3x3"), (2, "conv_1x3"), (0, "conv_3x1"))
    cells |= {lv: chain for lv in LEVELS if lv not in cells}  # an AutoFEM-CPM has P2..P7
    meta = GenotypeMeta(search_space="autofem", op_set="S_CPM", mode="top1_tree", nodes=4,
                        partial_channels_k=4, seed=0, dataset="toy", epochs=3,
                        metrics={"easy": 0.5, "hard": 0.25}, created="2024-05-01T12:00:00+00:00",
                        note="test genotype")
    return Genotype(cells=cells, sections={FPN_KEY: fpn()}, meta=meta)


def with_cell(g: Genotype, name: str, cell: CellGenotype) -> Genotype:
    return dataclasses.replace(g, cells={**g.cells, name: cell})


def with_fpn(g: Genotype, fpn: FPNGenotype) -> Genotype:
    return dataclasses.replace(g, sections={FPN_KEY: fpn})


def with_level(g: Genotype, name: str, **changes) -> Genotype:
    levels = dict(fpn_of(g).levels)
    levels[name] = dataclasses.replace(levels[name], **changes)
    return with_fpn(g, FPNGenotype(levels))


def problems(g: Genotype, **kw) -> str:
    with pytest.raises(GenotypeError) as info:
        validate_genotype(g, **kw)
    return str(info.value)


# ------------------------------------------------------------------------------- round trip
def test_save_load_round_trip(genotype, tmp_path):
    path = save_genotype(genotype, tmp_path / "sub" / "g.yaml")
    assert load_genotype(path, known_ops=S_CPM) == genotype
    assert [p.name for p in path.parent.iterdir()] == ["g.yaml"]  # no temp file left behind
    text = path.read_text()
    assert "version: 1\n" in text
    assert "leaves: [2, 3, 4]" in text  # P3: node 1 feeds 2 and 3; 4 hangs off the input
    assert "- [{parent: 1, op: conv_1x3}]" in text


def test_dict_round_trip_and_leaves(genotype):
    data = genotype_to_dict(genotype)
    assert data["cells"]["P4"]["leaves"] == [1, 4]
    assert data["fpn"]["levels"]["P7"]["td"] is None
    assert genotype_from_dict(data) == genotype


def test_pcdarts_dag_round_trip():
    cell = CellGenotype((NodeGenotype((Edge(0, "conv_1x1"),)),
                         NodeGenotype((Edge(0, "conv_1x3"), Edge(1, "conv_3x1")))), "cat_all")
    g = Genotype(cells={"c": cell}, meta=GenotypeMeta(mode="pcdarts"))
    assert genotype_from_dict(genotype_to_dict(g)) == g
    assert cell.output_nodes == (1, 2) and cell.leaves == (2,)


# ------------------------------------------------------------------------------- validation
def test_valid_genotype_passes(genotype):
    validate_genotype(genotype, known_ops=S_CPM)


def test_unknown_op(genotype):
    g = with_cell(genotype, "P3", tree((0, "bogus"), (1, "conv_1x1"), (1, "conv_1x1"),
                                       (0, "conv_1x1")))
    validate_genotype(g)  # no known_ops: not checked
    assert "cells.P3.nodes[0].edges[0].op: unknown operation 'bogus'" in problems(
        g, known_ops=S_CPM)
    g = with_level(genotype, "P5", td="conv_9x9")
    assert "fpn.levels.P5.td: unknown operation 'conv_9x9'" in problems(g, known_ops=S_FPN)


def test_parent_out_of_range(genotype):
    g = with_cell(genotype, "P3", tree((0, "conv_1x1"), (1, "conv_1x1"), (5, "conv_1x1"),
                                       (0, "conv_1x1")))
    assert "cells.P3.nodes[2].edges[0].parent: parent 5 out of range 0..2" in problems(g)


def test_cycle_and_unreachable(genotype):
    g = with_cell(genotype, "P3", tree((0, "conv_1x1"), (3, "conv_1x1"), (2, "conv_1x1"),
                                       (0, "conv_1x1")))
    msg = problems(g)
    assert "cells.P3.nodes: cycle 2 -> 3 -> 2" in msg
    assert "cells.P3.nodes: node(s) 2, 3 unreachable from the input node 0" in msg
    assert "cells.P3.nodes[1].edges[0].parent: parent 3 out of range 0..1" in msg


def test_node_without_edges_is_unreachable(genotype):
    cell = CellGenotype((NodeGenotype((Edge(0, "conv_1x1"),)), NodeGenotype(())))
    msg = problems(dataclasses.replace(with_cell(genotype, "P3", cell), meta=GenotypeMeta()))
    assert "cells.P3.nodes[1].edges: node 2 has no incoming edge" in msg
    assert "cells.P3.nodes: node(s) 2 unreachable" in msg


def test_repeated_parent(genotype):
    node = NodeGenotype((Edge(0, "conv_1x1"), Edge(0, "conv_1x3")))
    cell = CellGenotype((NodeGenotype((Edge(0, "conv_1x1"),)), node))
    g = Genotype(cells={"c": cell}, meta=GenotypeMeta(mode="pcdarts"))
    assert "cells.c.nodes[1].edges[1].parent: parent 0 repeated on node 2" in problems(g)


def test_node_count_mismatch(genotype):
    g = with_cell(genotype, "P4", tree((0, "conv_1x1"), (1, "conv_1x1"), (1, "conv_1x1")))
    assert "cells.P4.nodes: 3 nodes but meta.nodes is 4" in problems(g)


def test_edges_per_node_and_mode_are_left_to_the_search_strategy(genotype):
    """The structural checks know no strategy: ``nas_search.strategies`` checks ``meta.mode``
    and its edges per node (tests/test_nas_strategies.py)."""
    two = NodeGenotype((Edge(0, "conv_1x1"), Edge(1, "conv_1x3")))
    cell = dataclasses.replace(genotype.cells["P3"],
                               nodes=genotype.cells["P3"].nodes[:1] + (two,)
                               + genotype.cells["P3"].nodes[2:])
    validate_genotype(with_cell(genotype, "P3", cell))  # a 2-edge node in a top1_tree genotype
    validate_genotype(dataclasses.replace(genotype, meta=GenotypeMeta(mode="random")))


def test_bad_concat_mode(genotype):
    cell = dataclasses.replace(genotype.cells["P3"], concat="cat_some")
    assert "cells.P3.concat: unknown concat mode 'cat_some'" in problems(
        with_cell(genotype, "P3", cell))


def test_unsupported_version(genotype):
    assert "version: unsupported genotype version 2" in problems(
        dataclasses.replace(genotype, version=2))
    data = genotype_to_dict(genotype) | {"version": 2}
    with pytest.raises(GenotypeError, match="version: unsupported genotype version 2"):
        genotype_from_dict(data)


@pytest.mark.parametrize("drop, expected", [
    ("P5", "fpn.levels: missing level(s) P5"),
    (None, "fpn.levels: unexpected level(s) P8"),
])
def test_fpn_levels_exactly_p2_to_p7(genotype, drop, expected):
    levels = dict(fpn_of(genotype).levels)
    if drop:
        del levels[drop]
    else:
        levels["P8"] = levels["P7"]
    assert expected in problems(with_fpn(genotype, FPNGenotype(levels)))


@pytest.mark.parametrize("level, changes, expected", [
    ("P7", {"td": "conv_1x1", "fusion": {"same": 0.3, "td": 0.3, "bu": 0.4}},
     "fpn.levels.P7.td: must be null at P7"),
    ("P2", {"bu": "conv_1x1", "fusion": {"same": 0.3, "td": 0.3, "bu": 0.4}},
     "fpn.levels.P2.bu: must be null at P2"),
    ("P4", {"bu": None, "fusion": {"same": 0.5, "td": 0.5}}, "fpn.levels.P4.bu: missing"),
    ("P4", {"td": None, "fusion": {"same": 0.5, "bu": 0.5}}, "fpn.levels.P4.td: missing"),
])
def test_fpn_paths_per_level(genotype, level, changes, expected):
    assert expected in problems(with_level(genotype, level, **changes))


@pytest.mark.parametrize("fusion, expected", [
    ({"same": 0.5, "td": 0.5}, "fpn.levels.P4.fusion: weights given for ['same', 'td'] but "
                               "the paths present are ['bu', 'same', 'td']"),
    ({"same": 0.3, "td": 0.3, "bu": 0.3}, "fpn.levels.P4.fusion: weights sum to 0.9, not 1"),
    ({"same": -0.5, "td": 0.5, "bu": 1.0}, "fpn.levels.P4.fusion: weights must lie in [0, 1]"),
])
def test_fusion_weights(genotype, fusion, expected):
    assert expected in problems(with_level(genotype, "P4", fusion=fusion))


def test_fusion_tolerates_rounding(genotype):
    validate_genotype(with_level(genotype, "P4", fusion={"same": 0.33, "td": 0.33, "bu": 0.33}))


def test_all_problems_reported_together(genotype):
    g = with_level(genotype, "P4", bu=None)
    g = dataclasses.replace(g, version=3)
    err = pytest.raises(GenotypeError, validate_genotype, g).value
    assert len(err.problems) == 3  # version, missing bu, fusion keys
    assert str(err).startswith("3 problems:")


def test_leaves_field_checked_on_load(genotype):
    data = genotype_to_dict(genotype)
    data["cells"]["P3"]["leaves"] = [1, 4]
    with pytest.raises(GenotypeError, match=r"cells\.P3\.leaves: written \[1, 4\] but the "
                                            r"nodes give \[2, 3, 4\]"):
        genotype_from_dict(data)
    del data["cells"]["P3"]["leaves"]  # optional on input
    assert genotype_from_dict(data) == genotype


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["cells"]["P3"].update(concat_mode="cat_all"),
     "cells.P3: unknown key(s) concat_mode"),
    (lambda d: d["cells"]["P3"]["nodes"][0][0].update(parent="a"),
     "cells.P3.nodes[0].edges[0].parent: expected an integer, got 'a'"),
    (lambda d: d["cells"]["P3"].pop("concat"), "cells.P3: missing key(s) concat"),
    (lambda d: d["meta"].update(nodes="six"), "meta.nodes: expected an integer"),
    (lambda d: d["meta"]["metrics"].update(easy="high"), "meta.metrics.easy: expected a number"),
    (lambda d: d["fpn"]["levels"]["P3"]["fusion"].update(skip=0.1),
     "fpn.levels.P3.fusion: unknown key(s) skip"),
])
def test_structure_errors_name_the_field(genotype, edit, expected):
    data = genotype_to_dict(genotype)
    edit(data)
    with pytest.raises(GenotypeError) as info:
        genotype_from_dict(data)
    assert expected in str(info.value)


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\ncells: {P3: [unclosed\n")
    with pytest.raises(GenotypeError) as info:
        load_genotype(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: invalid YAML") and "line" in msg


def test_file_error_names_the_file(genotype, tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(genotype_to_yaml(genotype).replace("parent: 1, op: conv_1x3",
                                                       "parent: 7, op: conv_1x3"))
    with pytest.raises(GenotypeError, match=rf"^{path}: cells\.P3\.nodes\[1\]\.edges\[0\]"
                                            r"\.parent: parent 7 out of range 0\.\.1"):
        load_genotype(path)


def test_save_refuses_an_invalid_genotype(genotype, tmp_path):
    with pytest.raises(GenotypeError):
        save_genotype(dataclasses.replace(genotype, version=9), tmp_path / "g.yaml")
    assert not list(tmp_path.iterdir())


def test_cell_graph(genotype):
    graph = cell_graph(genotype.cells["P3"])
    assert sorted(graph.edges) == [(0, 1), (0, 4), (1, 2), (1, 3)]
    assert graph.edges[1, 3]["op"] == "dil_conv_5x5_r2"


# ---------------------------------------------------------------------------------- library
def test_library_lists_and_loads_by_name():
    names = list_library()
    assert {"asfd_paper_like", "pcdarts_example"} <= set(names)
    for name in names:
        assert load_genotype(name, known_ops=S_CPM) == load_genotype(f"{name}.yaml")
    with pytest.raises(FileNotFoundError, match="shipped: asfd_paper_like"):
        load_genotype("no_such_genotype")


def test_paper_like_genotype_follows_the_paper_text():
    g = load_genotype("asfd_paper_like", known_ops=S_CPM)
    assert "RECONSTRUCTION" in g.meta.note
    assert (g.meta.mode, g.meta.nodes) == ("top1_tree", 6)
    assert list(g.cells) == list(LEVELS)
    for level in fpn_of(g).levels.values():  # same level 1x1, neighbours dilated / 5x5 separable
        assert level.same == "conv_1x1"
        assert {level.td, level.bu} - {None} <= {"sep_conv_5x5", "dil_conv_3x3_r2",
                                                 "dil_conv_3x3_r3", "dil_conv_5x5_r2"}
    depth = {n: nx.dag_longest_path_length(cell_graph(c)) for n, c in g.cells.items()}
    assert depth["P2"] == depth["P3"] == 3 and depth["P6"] == depth["P7"] == 2
    assert all(c.concat == "cat_leaf" and c.n_nodes == 6 for c in g.cells.values())


def test_pcdarts_example_is_a_dag_with_two_parents():
    g = load_genotype("pcdarts_example", known_ops=S_CPM)
    assert list(g.cells) == list(LEVELS) and fpn_of(g) is None
    for cell in g.cells.values():
        assert [len(n.edges) for n in cell.nodes] == [1, 2, 2, 2]
        assert cell.concat == "cat_all"


@pytest.mark.parametrize("name", ["asfd_paper_like", "pcdarts_example"])
@pytest.mark.parametrize("variant", ["D0", "D3"])
def test_every_shipped_genotype_derives(name, variant):
    """What validate accepts, derive builds: D0 (P4-P7) and D3 (all six levels)."""
    derive_detector = pytest.importorskip("detectors.workflows.pipeline").derive_detector
    assert derive_detector(name, variant).config.name


@pytest.mark.parametrize("cells, search_space, expected", [
    (("P3", "P4"), "autofem_cpm", "cells: missing level(s) P2, P5, P6, P7; an AutoFEM-CPM has "
                                  "one cell per level P2, P3, P4, P5, P6, P7"),
    ((*LEVELS, "P8"), "autofem_cpm", "cells: unexpected cell(s) P8"),
    (("cpm",), "autofem_cpm", "cells: unexpected cell(s) cpm"),
    (("P3",), "", "cells: missing level(s) P2, P4"),  # a level name makes it an AutoFEM-CPM
])
def test_autofem_cells_are_exactly_the_levels(cells, search_space, expected):
    cell = tree((0, "conv_1x1"))
    g = Genotype(cells={name: cell for name in cells}, meta=GenotypeMeta(search_space=search_space))
    assert expected in problems(g)


def test_other_genotypes_name_cells_freely():
    validate_genotype(Genotype(cells={"cell": tree((0, "conv_1x1"))},
                               meta=GenotypeMeta(search_space="digits")))


def dag(n_nodes: int, parents: int) -> CellGenotype:
    """``n_nodes`` nodes, each fed by its ``parents`` predecessors."""
    return CellGenotype(tuple(NodeGenotype(tuple(Edge(p, "conv_1x1")
                                                 for p in range(max(0, j - parents), j)))
                              for j in range(1, n_nodes + 1)), "cat_all")


def test_paper_op_sets_are_what_search_spaces_builds():
    """The CLI checks op names against search_spaces.schemas without importing torch."""
    ops = pytest.importorskip("search_spaces.ops")
    from nas_search.registry import get_op_set

    assert sorted(ops.OP_SPECS) == paper_ops()
    assert {name: get_op_set(name) for name in PAPER_OP_SETS} == PAPER_OP_SETS


def test_size_caps_and_lifting_them(tmp_path, capsys):
    g = Genotype(cells={"c": dag(65, 1)}, meta=GenotypeMeta(mode="pcdarts"))
    assert "cells.c.nodes: 65 nodes, above the cap of 64 per cell" in problems(g)
    assert "cells.c.nodes: 465 edges, above the cap of 256" in problems(
        dataclasses.replace(g, cells={"c": dag(30, 30)}))  # 30 * 31 / 2 edges
    validate_genotype(g, limits=GenotypeLimits(max_nodes=None))
    validate_genotype(g, limits=GenotypeLimits(max_nodes=65))
    path = save_genotype(g, tmp_path / "big.yaml")  # saving keeps a search's result uncapped
    with pytest.raises(GenotypeError, match="65 nodes, above the cap"):
        load_genotype(path)
    assert load_genotype(path, limits=GenotypeLimits(max_nodes=None)) == g
    assert main(["genotypes", "validate", str(path)]) == 2
    assert "--max-nodes 0" in capsys.readouterr().err
    assert main(["genotypes", "validate", str(path), "--max-nodes", "0"]) == 0


# -------------------------------------------------------------------------------------- CLI
def test_cli_validate(genotype, tmp_path, capsys):
    good = save_genotype(genotype, tmp_path / "good.yaml")
    assert main(["genotypes", "validate", str(good)]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("concat: cat_leaf", "concat: cat_most", 1))
    assert main(["genotypes", "validate", str(bad)]) == 2
    assert "cells.P3.concat: unknown concat mode 'cat_most'" in capsys.readouterr().err


def test_cli_list(capsys):
    assert main(["genotypes", "list"]) == 0
    out = capsys.readouterr().out
    assert "asfd_paper_like" in out and "pcdarts_example" in out and "RECONSTRUCTI" in out


@pytest.mark.parametrize("content", [bytes(range(256)), b"version: 1\nmeta: {note: \"a\x01b\"}\n"],
                         ids=["binary", "control-character"])
def test_a_binary_file_is_a_one_line_error_naming_it(tmp_path, content):
    path = tmp_path / "g.yaml"
    path.write_bytes(content)
    with pytest.raises(GenotypeError) as info:
        load_genotype(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


# ------------------------------------------------------------------------- FPN pathway
@pytest.mark.parametrize("key, value, older", [("pathway", "recursive", "one_hop"),
                                                ("gate", "normalized", "product")])
def test_fpn_fields_round_trip_and_older_files_read_as_what_they_hold(genotype, tmp_path, key,
                                                                     value, older):
    changed = with_fpn(genotype, dataclasses.replace(fpn_of(genotype), **{key: value}))
    path = save_genotype(changed, tmp_path / "g.yaml")
    assert f"{key}: {value}" in path.read_text()
    assert getattr(fpn_of(load_genotype(path)), key) == value
    data = genotype_to_dict(changed)
    del data["fpn"][key]   # a file written before the field existed
    assert getattr(fpn_of(genotype_from_dict(data)), key) == older


def test_the_paper_like_genotype_reads_one_hop_paths_with_product_gates():
    fpn = fpn_of(load_genotype("asfd_paper_like"))
    assert (fpn.pathway, fpn.gate) == ("one_hop", "product")


def test_unknown_fpn_gate_names_the_field(genotype):
    data = genotype_to_dict(genotype)
    data["fpn"]["gate"] = "sigmoid"
    with pytest.raises(GenotypeError, match="fpn.gate: unknown gate 'sigmoid'"):
        genotype_from_dict(data)


def test_unknown_fpn_pathway_names_the_field(genotype):
    data = genotype_to_dict(genotype)
    data["fpn"]["pathway"] = "two_hop"
    with pytest.raises(GenotypeError, match="fpn.pathway: unknown pathway 'two_hop'"):
        genotype_from_dict(data)
    data["fpn"]["pathway"] = 3
    with pytest.raises(GenotypeError, match="fpn.pathway: expected a string"):
        genotype_from_dict(data)


def test_size_caps_guard_rendering_not_building(tmp_path):
    """A cell over the caps is refused where it would be drawn (validate/render lift it with
    --max-nodes) and builds where a network is made from it (derive, training, model files)."""
    from detectors.models.asfd import load_model, save_model
    from detectors.workflows.pipeline import derive_detector

    chain = CellGenotype(tuple(NodeGenotype((Edge(j, "conv_1x1"),)) for j in range(70)),
                         "cat_leaf")
    big = Genotype(cells={level: chain for level in LEVELS},
                   meta=GenotypeMeta(search_space="autofem_cpm"))
    path = save_genotype(big, tmp_path / "big.yaml")
    with pytest.raises(GenotypeError, match="--max-nodes"):
        load_genotype(path)
    model = derive_detector(path, "D0", width=8)
    assert model.genotype.cells["P3"].n_nodes == 70
    assert load_model(save_model(model, tmp_path / "big.pt")).genotype.cells["P3"].n_nodes == 70


# ------------------------------------------------------------------ search-space schemas
class _ToySection(SectionSchema):
    """A section listing named ops (``toy: {a: conv_1x1}``), drawn as ``in -> name``."""

    key = "toy"

    def parse(self, value):
        return dict(value)

    def to_dict(self, section):
        return dict(section)

    def problems(self, section, known_ops):
        return [f"toy.{k}: unknown operation {v!r}" for k, v in section.items()
                if known_ops is not None and v not in known_ops]

    def drawing(self, section):
        return SectionDrawing("toy part", ("in",), tuple(section),
                              tuple(DrawnEdge("in", k, v, "only") for k, v in section.items()),
                              (("only", "a toy path"),))


@pytest.fixture
def toy_schema(monkeypatch):
    """A search space's schema in a few lines: a section, and cells fixed to ``a``."""
    monkeypatch.setattr(spaces, "_SCHEMAS", dict(spaces._SCHEMAS))  # unregistered afterwards

    class Toy(SpaceSchema):
        def problems(self, genotype):
            return [] if set(genotype.cells) <= {"a"} else ["cells: a toy has cell a only"]

    return register_space_schema(Toy("toy", ("toy_space",), (_ToySection(),), ("a",)))


def test_a_registered_schema_plugs_its_section_and_rules_in(toy_schema, tmp_path):
    g = Genotype(cells={"a": tree((0, "conv_1x1"))}, sections={"toy": {"a": "sep_conv_3x3"}},
                 meta=GenotypeMeta(search_space="toy_space"))
    path = save_genotype(g, tmp_path / "g.yaml")
    assert "toy:\n  a: sep_conv_3x3\n" in path.read_text()
    assert load_genotype(path, known_ops=S_CPM) == g
    assert "toy.a: unknown operation 'sep_conv_3x3'" in problems(g, known_ops=["conv_1x1"])
    assert "cells: a toy has cell a only" in problems(with_cell(g, "b", tree((0, "conv_1x1"))))
    from visualize.render import genotype_to_dot

    dot = genotype_to_dot(g)
    assert "subgraph cluster_toy" in dot and "toy_in -> toy_a [label=sep_conv_3x3" in dot
    assert "toy_a -> cell_a_0" in dot  # the section's output a feeds cell a
    assert 'legend_only_from -> legend_only_to [label="a toy path"' in dot


def test_a_schema_cannot_take_another_schemas_names(toy_schema):
    with pytest.raises(ValueError, match="toy_space already belong.* to schema 'toy'"):
        register_space_schema(SpaceSchema("other", ("toy_space",)))
    with pytest.raises(ValueError, match="fpn already belong.* to schema 'autofem'"):
        register_space_schema(SpaceSchema("other", ("x",), (FPNSection(),)))
    assert "autofem" in list_space_schemas() and "toy" in list_space_schemas()


def test_unregistered_search_space_or_section_is_a_one_line_error(genotype):
    g = dataclasses.replace(genotype, meta=GenotypeMeta(search_space="mystery"))
    msg = problems(g)
    assert msg.startswith("meta.search_space: no genotype schema is registered for 'mystery'")
    assert "autofem_cpm" in msg and "\n" not in msg
    data = genotype_to_dict(genotype) | {"extra": {"x": 1}}
    with pytest.raises(GenotypeError, match=r"^genotype: unknown key\(s\) extra; allowed: "
                                            r"version, meta, cells and the registered "
                                            r"sections \(fpn;"):
        genotype_from_dict(data)


def test_the_generic_format_alone_names_the_missing_schema(tmp_path):
    """Without ``search_spaces`` imported, an AutoFEM file is refused in one line that names
    its search space (or its section); generic files load."""
    generic = tmp_path / "generic.yaml"
    generic.write_text("version: 1\ncells:\n  c:\n    concat: cat_all\n"
                       "    nodes:\n    - [{parent: 0, op: conv_1x1}]\n")
    fpn_only = tmp_path / "fpn.yaml"
    fpn_only.write_text(genotype_to_yaml(load_genotype("asfd_paper_like")).replace(
        "search_space: autofem", "search_space: ''"))
    code = f"""
import sys
from genotypes import GenotypeError, load_genotype
print(sorted(load_genotype({str(generic)!r}).cells))
for name in ("asfd_paper_like", {str(fpn_only)!r}):
    try:
        load_genotype(name)
    except GenotypeError as exc:
        print(exc)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("search_spaces", "torch")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == "['c']"
    assert out[1].startswith("library:asfd_paper_like: meta.search_space: no genotype schema "
                             "is registered for 'autofem' (known: none;")
    assert out[2].startswith(f"{fpn_only}: genotype: unknown key(s) fpn; allowed: version, "
                             "meta, cells and the registered sections (none;")
    assert out[3] == "[]"
