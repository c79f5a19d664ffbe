"""Generic differentiable architecture search engine (PC-DARTS + top-1 Gumbel tree cells)."""
from nas_search.cell import FixedCell, SearchCell
from nas_search.gumbel import hard_gumbel_softmax, linear_temperature
from nas_search.mixed_op import MixedOp, channel_shuffle, channel_unshuffle
from nas_search.registry import build_op, get_op_set, register_op, register_op_set
from nas_search.search import NonFiniteLossError, SearchConfig, SearchResult, search
from nas_search.supernet import Supernet
from nas_search.task import SearchTask
