"""CPU latency of exported detectors against YuNet, in one alternating run.

YuNet (``../shared/models/face_detection_yunet_*.onnx``) runs in OpenCV's ``FaceDetectorYN``,
its decoding and NMS included, so compare it with exports that include post-processing
(``pp``). Each *pair* runs YuNet once and every entry once on the same 640x480 image (a real
WIDER test image, resized), in an order that rotates from pair to pair; the ratio of an entry is
the median over pairs of its time over YuNet's time in the same pair, so load that drifts during
the run cancels. Every thread count is a run of its own (OpenCV and onnxruntime get the same).

Entries are exported files (``--onnx``) and a model (a checkpoint or run folder, an ASFD
variant or a reference detector, built untrained) times an export *variant*,
``KIND[:OPTION]...``:

* ``raw`` or ``pp``: raw outputs (no decoding, no NMS) or post-processing in the graph;
* ``k=N``: pre-NMS top-k (default 5000, the paper's); ``floor=F``: the score floor
  (``score_threshold``, default 0.05);
* ``opt=basic|extended|all``: onnxruntime's graph optimisation level (default ``all``);
* ``int8``: static int8 quantisation, calibrated on ``--calibration`` (needed then);
* ``fixed``: a graph for 640x480 only (``asfd export --fixed-size``: anchors folded at load).

With ``--ops`` it also times every S_CPM operation alone in onnxruntime (64 channels, the P3
map of a 640x480 input, 80x60) beside its multiply-adds: the latency a search's op choice costs.

With ``--kernels`` it times each kind of convolution alone (stem, depthwise, pointwise, dense
3x3), float32 and int8 (:func:`~detectors.engine.export.static_int8`), at D0's sizes, and gives
each model its *latency floor*: the multiply-adds of its convolutions of each kind (every Conv
node of the exported graph, at 640x480) over the best rate measured for that kind. A model
cannot run faster than its floor with these kernels, whatever its graph around them.

opencv is no runtime dependency of asfd: without ``opencv-python-headless`` (``pip install
'opencv-python-headless<5'``) the bench prints why it skips and exits 0.

Run: ``PYTHONPATH=. python bench/yunet_speed.py --models runs/acc2/d0 --variants pp pp:k=750``
(README, "Speed against YuNet", has the measured tables and the commands).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence, get_args

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
YUNET_GLOB = "face_detection_yunet_*.onnx"
MODELS_DIR = ROOT.parent / "shared" / "models"
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "wider-test-unlabeled" / "images"
SIZE = (640, 480)  # (W, H)
OPT_LEVELS = ("basic", "extended", "all")


@dataclass(frozen=True)
class Variant:
    """One export setting (module docstring)."""

    postprocess: bool
    pre_nms_top_k: int = 5000
    score_threshold: float = 0.05
    optimization: str = "all"
    int8: bool = False
    fixed: bool = False


def parse_variant(spec: str) -> Variant:
    """``pp:k=750:int8`` -> :class:`Variant`; a bad part is a ValueError naming it."""
    kind, *options = spec.split(":")
    if kind not in ("raw", "pp"):
        raise ValueError(f"variant {spec!r}: starts with raw or pp, not {kind!r}")
    fields: dict = {"postprocess": kind == "pp"}
    for option in options:
        key, _, value = option.partition("=")
        if option in ("int8", "fixed"):
            fields[option] = True
        elif key == "k" and value.isdigit() and kind == "pp":
            fields["pre_nms_top_k"] = int(value)
        elif key == "floor" and kind == "pp":
            fields["score_threshold"] = float(value)
        elif key == "opt" and value in OPT_LEVELS:
            fields["optimization"] = value
        else:
            raise ValueError(f"variant {spec!r}: unknown option {option!r} (k=N and floor=F "
                             f"for pp, opt={'|'.join(OPT_LEVELS)}, int8, fixed)")
    return Variant(**fields)


def paired_ratios(times: dict[str, list[float]], reference: str) -> dict[str, float]:
    """Median over pairs of each entry's time over the reference's time in the same pair."""
    ref = times[reference]
    return {name: statistics.median(t / r for t, r in zip(ts, ref)) for name, ts in times.items()}


def alternate(runs: dict[str, Callable[[], object]], pairs: int, warmup: int = 2
              ) -> dict[str, list[float]]:
    """Milliseconds of each callable per pair, the order rotating by one each pair."""
    names = list(runs)
    for name in names:
        for _ in range(warmup):
            runs[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(pairs):
        for name in names[i % len(names):] + names[:i % len(names)]:
            start = time.perf_counter()
            runs[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def yunet_model(models_dir: Path = MODELS_DIR) -> Path:
    found = sorted(models_dir.glob(YUNET_GLOB))
    if not found:
        raise FileNotFoundError(f"no {YUNET_GLOB} in {models_dir}")
    return found[-1]


def yunet_runner(cv2, model: Path, image_rgb: np.ndarray, score: float) -> Callable[[], object]:
    """YuNet's ``detect`` (network, decoding, NMS) on one image, OpenCV's default NMS 0.3 and
    top-k 5000."""
    height, width = image_rgb.shape[:2]
    detector = cv2.FaceDetectorYN.create(str(model), "", (width, height), score, 0.3, 5000)
    bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
    return lambda: detector.detect(bgr)


def export_variant(model, variant: Variant, path: Path, calibration: list[Path]) -> Path:
    from detectors.engine.export import export_onnx, quantize_onnx
    from detectors.engine.inference import PostProcess

    post = PostProcess(score_threshold=variant.score_threshold,
                       pre_nms_top_k=variant.pre_nms_top_k)
    fp32 = export_onnx(model, path.with_suffix(".fp32.onnx"), variant.postprocess, post,
                       sample_size=(SIZE[1], SIZE[0]), fixed_size=variant.fixed)
    if not variant.int8:
        return fp32
    if not calibration:
        raise ValueError("an int8 variant needs --calibration DIR")
    return quantize_onnx(fp32, path, calibration, SIZE)


def op_table(threads: int, repeats: int) -> list[dict]:
    """Median onnxruntime ms and MACs of every S_CPM op alone (64 ch, 80x60)."""
    import torch

    import search_spaces.ops  # noqa: F401  (registers the op sets)
    from detectors.engine.export import onnx_session
    from detectors.engine.macs import count_macs
    from nas_search.registry import build_op, get_op_set

    x = torch.randn(1, 64, SIZE[1] // 8, SIZE[0] // 8)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in get_op_set("S_CPM"):
            op = build_op(name, 64).eval()
            path = Path(tmp) / f"{name}.onnx"
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation
                torch.onnx.export(op, (x,), str(path), dynamo=False, input_names=["images"])
            session = onnx_session(path, threads)
            feed = {"images": x.numpy()}
            ms = alternate({name: lambda: session.run(None, feed)}, repeats)[name]
            rows.append({"op": name, "macs_m": count_macs(op, x) / 1e6,
                         "ms": statistics.median(ms)})
    return rows


ConvKind = Literal["stem", "depthwise", "pointwise", "dense"]


@dataclass(frozen=True)
class Kernel:
    """One convolution (+ ReLU, which onnxruntime fuses) timed alone on a ``shape = (C, H, W)``
    input."""

    kind: ConvKind
    channels_out: int
    kernel: int
    shape: tuple[int, int, int]
    stride: int = 1

    @property
    def depthwise(self) -> bool:
        return self.kind == "depthwise"

    def module(self):
        from torch import nn

        channels = self.shape[0]
        return nn.Sequential(nn.Conv2d(
            channels, self.channels_out, self.kernel, self.stride, self.kernel // 2,
            groups=channels if self.depthwise else 1), nn.ReLU())

    def macs(self) -> int:
        c, h, w = self.shape
        per_output = (1 if self.depthwise else c) * self.kernel ** 2
        return self.channels_out * (h // self.stride) * (w // self.stride) * per_output


#: D0's convolutions at 640x480: the stem, and 64-channel maps at stride 4 (160x120) and 8.
KERNELS: tuple[Kernel, ...] = (
    Kernel("stem", 8, 3, (3, SIZE[1], SIZE[0]), stride=2),
    Kernel("depthwise", 64, 3, (64, SIZE[1] // 4, SIZE[0] // 4)),
    Kernel("depthwise", 64, 3, (64, SIZE[1] // 8, SIZE[0] // 8)),
    Kernel("pointwise", 64, 1, (64, SIZE[1] // 4, SIZE[0] // 4)),
    Kernel("pointwise", 64, 1, (64, SIZE[1] // 8, SIZE[0] // 8)),
    Kernel("dense", 64, 3, (64, SIZE[1] // 8, SIZE[0] // 8)),
)


def conv_kind(weight_shape: Sequence[int], groups: int) -> ConvKind:
    """The kind of a Conv with weights ``[O, I / groups, kh, kw]``."""
    if groups > 1:
        return "depthwise"
    if weight_shape[1] == 3:
        return "stem"
    return "pointwise" if tuple(weight_shape[2:]) == (1, 1) else "dense"


def conv_macs_by_kind(path: Path, feed: dict[str, np.ndarray]) -> dict[ConvKind, int]:
    """Multiply-adds per image of every Conv node of an ONNX graph, by :func:`conv_kind`; the
    output shapes come from running the graph on ``feed`` (every Conv output made a graph
    output)."""
    import onnx

    from detectors.engine.export import onnx_session

    model = onnx.load(str(path))
    weights = {w.name: list(w.dims) for w in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n.output[0])
                              for n in convs)
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "probed.onnx"
        onnx.save(model, str(probed))
        outputs = onnx_session(probed, 1, "basic").run([n.output[0] for n in convs], feed)
    batch = next(iter(feed.values())).shape[0]
    macs: dict[ConvKind, int] = dict.fromkeys(get_args(ConvKind), 0)
    for node, out in zip(convs, outputs):
        shape = weights[node.input[1]]
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        macs[conv_kind(shape, groups)] += out.size // batch * int(np.prod(shape[1:]))
    return macs


class RepeatedInput:
    """A calibration reader giving one input ``count`` times."""

    def __init__(self, feed: dict[str, np.ndarray], count: int = 4) -> None:
        self.left, self.feed = count, feed

    def get_next(self) -> dict[str, np.ndarray] | None:
        self.left -= 1
        return self.feed if self.left >= 0 else None


def kernel_rates(threads: int, repeats: int) -> list[dict]:
    """Median ms and GMAC/s of every :data:`KERNELS` entry alone, float32 and int8."""
    import torch

    from detectors.engine.export import onnx_session, static_int8

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, kernel in enumerate(KERNELS):
            x = torch.randn(1, *kernel.shape)
            fp32, int8 = Path(tmp) / f"{i}.onnx", Path(tmp) / f"{i}.int8.onnx"
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation
                torch.onnx.export(kernel.module().eval(), (x,), str(fp32), dynamo=False,
                                  input_names=["images"])
            feed = {"images": x.numpy()}
            static_int8(fp32, int8, RepeatedInput(feed))
            sessions = {p: onnx_session(f, threads) for p, f in (("fp32", fp32), ("int8", int8))}
            times = alternate({p: lambda s=s: s.run(None, feed) for p, s in sessions.items()},
                              repeats)
            row = {"kind": kernel.kind, "shape": kernel.shape, "macs_m": kernel.macs() / 1e6}
            for precision, ts in times.items():
                row[f"{precision}_ms"] = statistics.median(ts)
                row[f"{precision}_gmacs"] = kernel.macs() / row[f"{precision}_ms"] / 1e6
            rows.append(row)
    return rows


def latency_floor(macs: dict[ConvKind, int], rates: list[dict], precisions: Sequence[str]
                  ) -> float:
    """Milliseconds the convolutions alone take at the best measured rate of each kind, over
    ``precisions`` (``fp32``, ``int8``)."""
    best = {kind: max(r[f"{p}_gmacs"] for r in rates if r["kind"] == kind for p in precisions)
            for kind in macs}
    return sum(m / best[kind] / 1e6 for kind, m in macs.items() if m)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=["D0"],
                        help="model files / run folders, or D0..D6 / reference names (untrained)")
    parser.add_argument("--variants", nargs="+", default=["raw", "pp"], metavar="SPEC",
                        help="export variants (module docstring)")
    parser.add_argument("--onnx", type=Path, nargs="*", default=[],
                        help="also time these exported files (e.g. from asfd export --int8)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--image", type=Path, help="default: the first WIDER test image")
    parser.add_argument("--calibration", type=Path, metavar="DIR",
                        help="calibration images of the int8 variants")
    parser.add_argument("--yunet-score", type=float, default=0.9,
                        help="YuNet's score threshold (default 0.9, the OpenCV zoo's)")
    parser.add_argument("--ops", action="store_true", help="also time the S_CPM ops alone")
    parser.add_argument("--kernels", action="store_true",
                        help="also time each kind of convolution alone and give each model's "
                             "latency floor")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    try:
        variants = {spec: parse_variant(spec) for spec in args.variants}
    except ValueError as exc:
        parser.error(str(exc))
    try:
        import cv2
    except ImportError:
        print("skipped: the YuNet comparison needs opencv-python-headless, which asfd does not "
              "depend on (pip install 'opencv-python-headless<5')")
        return 0

    import torch
    from PIL import Image
    from rich.console import Console
    from rich.table import Table

    from detectors.data.image import load_image, to_tensor
    from detectors.engine.checkpoint import MODEL_FILE
    from detectors.engine.config import ModelConfig
    from detectors.engine.export import onnx_session
    from detectors.engine.inference import find_images
    from detectors.engine.trainer import build_model

    image_path = args.image or next(iter(find_images(DEFAULT_IMAGES).values()))
    image = np.asarray(Image.fromarray(load_image(image_path)).resize(
        SIZE, Image.Resampling.BILINEAR))
    feed = {"images": to_tensor(image)[None].numpy()}
    calibration = list(find_images(args.calibration).values()) if args.calibration else []
    results: dict = {"image": str(image_path), "size": SIZE, "runs": []}
    console = Console(width=140)
    conv_macs: dict[str, dict[ConvKind, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[str, tuple[Path, str]] = {}
        for model_name in args.models:
            torch.manual_seed(0)
            source = Path(model_name) / MODEL_FILE if Path(model_name).is_dir() else model_name
            model = build_model(ModelConfig(name=str(source))).eval()
            if args.kernels:
                raw = export_variant(model, Variant(postprocess=False),
                                     Path(tmp) / f"{Path(model_name).name}.raw.onnx", [])
                conv_macs[Path(model_name).name] = conv_macs_by_kind(raw, feed)
            for spec, variant in variants.items():
                key = f"{Path(model_name).name} {spec}"
                path = Path(tmp) / f"{len(files)}.onnx"
                files[key] = (export_variant(model, variant, path, calibration),
                              variant.optimization)
        files.update({path.name: (path, "all") for path in args.onnx})
        for threads in args.threads:
            cv2.setNumThreads(threads)
            runs = {"YuNet": yunet_runner(cv2, yunet_model(), image, args.yunet_score)}
            for key, (path, level) in files.items():
                session = onnx_session(path, threads, level)
                runs[key] = lambda s=session: s.run(None, feed)
            times = alternate(runs, args.pairs)
            ratios = paired_ratios(times, "YuNet")
            table = Table(title=f"{threads} thread(s), {SIZE[0]}x{SIZE[1]}, {args.pairs} "
                                f"alternating pairs")
            for column in ("entry", "median ms", "ratio to YuNet"):
                table.add_column(column, justify="left" if column == "entry" else "right")
            for key, ts in times.items():
                table.add_row(key, f"{statistics.median(ts):.1f}", f"{ratios[key]:.2f}x")
            console.print(table)
            results["runs"].append({"threads": threads, "median_ms": {
                k: statistics.median(v) for k, v in times.items()}, "ratio": ratios})
    if args.ops:
        rows = op_table(args.threads[0], args.pairs)
        table = Table(title=f"S_CPM ops alone, 64 ch, 80x60, {args.threads[0]} thread(s)")
        for column in ("op", "MACs (M)", "median ms", "ms per GMAC"):
            table.add_column(column, justify="left" if column == "op" else "right")
        for r in rows:
            table.add_row(r["op"], f"{r['macs_m']:.1f}", f"{r['ms']:.3f}",
                          f"{r['ms'] / r['macs_m'] * 1e3:.1f}")
        console.print(table)
        results["ops"] = rows
    if args.kernels:
        rates = kernel_rates(args.threads[0], args.pairs)
        table = Table(title=f"Convolutions alone, {args.threads[0]} thread(s)")
        for column in ("kind", "input (C, H, W)", "MACs (M)", "fp32 ms", "fp32 GMAC/s",
                       "int8 ms", "int8 GMAC/s"):
            table.add_column(column, justify="left" if column == "kind" else "right")
        for r in rates:
            table.add_row(r["kind"], str(r["shape"]), f"{r['macs_m']:.1f}",
                          f"{r['fp32_ms']:.3f}", f"{r['fp32_gmacs']:.1f}",
                          f"{r['int8_ms']:.3f}", f"{r['int8_gmacs']:.1f}")
        console.print(table)
        yunet_ms = results["runs"][0]["median_ms"]["YuNet"]
        table = Table(title=f"Latency floor: conv MACs by kind over the best rate of the kind "
                            f"(YuNet's median {yunet_ms:.1f} ms, {args.threads[0]} thread(s))")
        for column in ("model", "MACs (M) stem / dw / pw / dense", "floor fp32 ms",
                       "floor fp32 or int8 ms", "floors / YuNet"):
            table.add_column(column, justify="left" if column == "model" else "right")
        floors = {}
        for name, macs in conv_macs.items():
            fp32 = latency_floor(macs, rates, ["fp32"])
            best = latency_floor(macs, rates, ["fp32", "int8"])
            floors[name] = {"macs": macs, "fp32_ms": fp32, "best_ms": best}
            table.add_row(name, " / ".join(f"{m / 1e6:.0f}" for m in macs.values()),
                          f"{fp32:.1f}", f"{best:.1f}",
                          f"{fp32 / yunet_ms:.2f}x / {best / yunet_ms:.2f}x")
        console.print(table)
        results["kernels"] = {"rates": rates, "floors": floors}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
