"""``inspectops``: the command line of the pipeline. Every command takes ``--params``.

Commands are thin: they load and validate params, call one function in ``components``
and turn known failures into a one-paragraph message on stderr and a non-zero exit.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

import typer

from components.config import DEFAULT_PARAMS_PATH, Params, ParamsError, load_params

app = typer.Typer(help="Open MLOps pipeline for golden-vs-test visual inspection.", no_args_is_help=True)
data_app = typer.Typer(help="Raw data in, validated datasets out.", no_args_is_help=True)
pipeline_app = typer.Typer(help="The stage graph: run it with Prefect, render it for DVC.", no_args_is_help=True)
app.add_typer(data_app, name="data")
infer_app = typer.Typer(help="Run a trained model on new images.", no_args_is_help=True)
benchmark_app = typer.Typer(help="Time models like trtexec: throughput and latency percentiles.")
label_app = typer.Typer(
    help="Label data with a trained model (MAL: boxes in, instance masks out).", no_args_is_help=True
)
app.add_typer(label_app, name="label")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(infer_app, name="infer")
app.add_typer(benchmark_app, name="benchmark")
registry_app = typer.Typer(help="Read the model registry: a version's card, tags and lineage.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")

ParamsOption = Annotated[
    Path,
    typer.Option(
        "--params",
        "-p",
        help="Path of params.yaml, or an overlay that extends it (params.<name>.yaml from data import).",
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        help="A registered model (models:/NAME@champion, models:/NAME/VERSION, runs:/RUN/deployable) or a bundle "
        "folder: runs its ONNX bundle on onnxruntime at the shipped threshold, instead of a checkpoint."
    ),
]
FamilyArgument = Annotated[str, typer.Argument(metavar="FAMILY", help="Model family: segment | mal | classify | cam.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", "-S", help="Override a param: -S data.image_size=128 (YAML value).")
]


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is the whole story: shown without a traceback."""
    from components.data.layout import LayoutError
    from components.imageio import ImageReadError
    from components.pipeline.runner import StageError

    errors: list[type[BaseException]] = [ParamsError, LayoutError, ImageReadError, StageError, FileNotFoundError]
    for module, name in (
        ("components.data.ingest", "IngestError"),
        ("components.data.sources.records", "SourceError"),
        ("components.validation.validate", "DataValidationError"),
        ("components.models.checkpoint", "CheckpointError"),
        ("components.labeling.errors", "LabelingError"),
        ("components.models.mal.data", "MalDataError"),
        ("components.inference.pairs", "PairingError"),
        ("components.inference.classify_infer", "InferInputError"),
        ("components.inference.cam_infer", "CamInputError"),
        ("components.models.changenet_classify.data", "ClassifyDataError"),
        ("components.tracking_outage", "TrackingUnreachableError"),
        ("components.models.backbones.pretrained", "PretrainedLoadError"),
        ("components.export.stage", "DeployStageError"),
        ("components.benchmarking.bench", "BenchmarkSetupError"),
        ("components.benchmarking.harness", "BenchmarkError"),
        ("components.benchmarking.runtimes", "RuntimeUnavailable"),
        ("components.benchmarking.runtimes", "ModelLoadError"),
        ("components.benchmarking.variants", "VariantError"),
        ("components.benchmarking.platforms", "PlatformError"),
        ("components.benchmarking.trtexec", "TrtexecError"),
        ("components.benchmarking.tensorrt_build", "EngineBuildError"),
        ("components.serving.runtime", "BundleError"),
        ("components.registry", "RegistryLookupError"),
        ("components.export.onnx_export", "ExportError"),
    ):
        with suppress(ImportError, AttributeError):
            errors.append(getattr(__import__(module, fromlist=[name]), name))
    return tuple(errors)


@contextmanager
def _friendly_errors() -> Iterator[None]:
    try:
        yield
    except _known_errors() as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    except OSError as error:
        from components.fsutil import is_disk_full

        if not is_disk_full(error):
            raise
        where = f" writing {error.filename}" if error.filename else ""
        typer.secho(
            f"error: no space left on the disk{where} ({error.strerror}). Free some space and run again: outputs "
            "are written to a temporary path and moved into place, so what earlier runs wrote is unchanged.",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(code=1) from None


def _load(params_path: Path, overrides: list[str] | None = None) -> Params:
    import yaml

    parsed: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ParamsError(f"--set {item!r}: expected key=value")
        parsed[key.strip()] = yaml.safe_load(value)
    return load_params(params_path, parsed)


def _tracking_uri(params_path: Path, overrides: list[str] | None) -> str | None:
    """The registry a ``models:/`` URI is read from: the params' tracking store (or MLFLOW_TRACKING_URI)."""
    from components.tracking import tracking_uri

    if not params_path.is_file():  # a line PC holding no checkout: MLFLOW_TRACKING_URI says where
        import os

        return os.environ.get("MLFLOW_TRACKING_URI")
    return tracking_uri(_load(params_path, overrides))


def _run_stage(name: str, params: Params) -> None:
    """Run one stage of the graph as its own MLflow run and print its metrics."""
    from components.pipeline.runner import run_stage

    metrics = run_stage(name, params)
    for key, value in sorted(metrics.items()):
        typer.echo(f"{key}: {value:g}")


@data_app.command("synth")
def data_synth(
    out: Annotated[
        Path | None, typer.Option(help="Category folder to write (default data/synthetic/<category>).")
    ] = None,
    category: Annotated[str | None, typer.Option(help="Category name (default data.category).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: params seed).")] = None,
    params: ParamsOption = DEFAULT_PARAMS_PATH,
    set_: SetOption = None,
) -> None:
    """Generate the built-in synthetic category in the MVTec AD layout (same seed, same bytes)."""
    from components.data.synth import synthesize_category

    with _friendly_errors():
        p = _load(params, set_)
        if out is None and category is None and seed is None:
            _run_stage("synth", p)  # the pipeline's synth stage (dvc repro): tracked like every stage
            return
        name = category or p.data.category
        target = out or p.paths.data_dir / "synthetic" / name
        counts = synthesize_category(target, name, p.synthetic, p.seed if seed is None else seed, progress=True)
        typer.echo(f"wrote {target}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


@data_app.command("ingest")
def data_ingest(
    source: Annotated[Path, typer.Argument(help="MVTec AD root, a category folder, or a .tar.xz/.tar.gz/.zip.")],
    category: Annotated[str | None, typer.Option(help="Category name (default data.category).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder that receives <category>/ (default data/mvtec).")] = None,
    params: ParamsOption = DEFAULT_PARAMS_PATH,
    set_: SetOption = None,
) -> None:
    """Check and copy an MVTec AD category into data/mvtec/<category>, atomically."""
    from components.data.ingest import ingest

    with _friendly_errors():
        p = _load(params, set_)
        name = category or p.data.category
        out_root = out or p.paths.data_dir / "mvtec"
        counts = ingest(source, name, out_root, progress=True)
        typer.echo(f"ingested {out_root / name}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        typer.echo("version it with: dvc commit data.dvc  (or dvc add for a new folder)")


@data_app.command("import")
def data_import(
    source: Annotated[Path, typer.Argument(help="Folder holding the data in FORMAT.")],
    format_: Annotated[
        str,
        typer.Option(
            "--format", "-f", help="tao-segment | tao-classify | coco | pairs | folders (README: Bring your own data)."
        ),
    ],
    name: Annotated[str, typer.Option(help="Name of the imported dataset: becomes data.category.")],
    golden_pattern: Annotated[
        str, typer.Option(help="pairs: golden file, with {id} (and {split}).")
    ] = "{id}_golden.png",
    test_pattern: Annotated[str, typer.Option(help="pairs: test file, with {id} (and {split}).")] = "{id}_test.png",
    box_pattern: Annotated[str, typer.Option(help="pairs: optional box file; '' for none.")] = "{id}.txt",
    mask_pattern: Annotated[str, typer.Option(help="pairs: optional mask file; '' for none.")] = "{id}_mask.png",
    box_separator: Annotated[str, typer.Option(help="pairs: separator of x1,y1,x2,y2,class.")] = ",",
    classes: Annotated[
        str | None, typer.Option(help="Known defect classes, comma-separated; others are refused.")
    ] = None,
    images_dir: Annotated[str, typer.Option(help="tao-classify / coco: the images folder inside SOURCE.")] = "images",
    out: Annotated[Path | None, typer.Option(help="Folder that receives <name>/ (default data/<format>).")] = None,
    params: ParamsOption = DEFAULT_PARAMS_PATH,
    set_: SetOption = None,
) -> None:
    """Check a TAO, COCO, golden/test-pairs or class-folder source and copy it into data/<format>/<name>, atomically."""
    from components.data.importer import import_source
    from components.data.sources.options import SourceOptions

    with _friendly_errors():
        p = _load(params, set_)
        options = SourceOptions(
            golden_pattern=golden_pattern,
            test_pattern=test_pattern,
            box_pattern=box_pattern or None,
            mask_pattern=mask_pattern or None,
            box_separator=box_separator,
            classes=tuple(c.strip().lower() for c in classes.split(",") if c.strip()) if classes else (),
            images_dir=images_dir,
        )
        out_root = out or p.paths.data_dir / format_
        found = import_source(format_, source, name, out_root, options, progress=True, params_path=params)
        families, overlay = found.pop("families"), found.pop("overlay")
        typer.echo(f"imported {out_root / name}: " + ", ".join(f"{k}={v}" for k, v in found.items()))
        typer.echo("model families:")
        for family, how in families.items():
            typer.echo(f"  {family}: {how}")
        typer.echo(f"wrote {overlay}: the settings this data implies, over {params}")
        typer.echo(f"run it with: inspectops pipeline run --params {overlay}")
        typer.echo(f"version the data with: dvc add {out_root / name}")


@data_app.command("prepare")
def data_prepare(params: ParamsOption = DEFAULT_PARAMS_PATH, set_: SetOption = None) -> None:
    """Build the segmentation, classification and COCO datasets under artifacts/datasets."""
    with _friendly_errors():
        _run_stage("prepare", _load(params, set_))


@data_app.command("validate")
def data_validate(params: ParamsOption = DEFAULT_PARAMS_PATH, set_: SetOption = None) -> None:
    """Run the Great Expectations suites; exit 1 and name the failing rows or files on failure."""
    with _friendly_errors():
        _run_stage("validate", _load(params, set_))


def _family_stage(kind: str, family: str) -> str:
    """The stage ``<kind>_<family>`` of the graph, or a clear error naming what exists."""
    from components.pipeline.stages import stage_names

    name = f"{kind}_{family}"
    if name not in stage_names():
        families = sorted(n.removeprefix(f"{kind}_") for n in stage_names() if n.startswith(f"{kind}_"))
        raise ParamsError(f"no {kind} stage for model family {family!r}; families with one: {', '.join(families)}")
    return name


@app.command("train")
def train(family: FamilyArgument, params: ParamsOption = DEFAULT_PARAMS_PATH, set_: SetOption = None) -> None:
    """Train a model family (segment: ChangeNet-Segmentation, mal: Mask Auto-Labeler, classify:
    ChangeNet-Classification), tracked in MLflow."""
    with _friendly_errors():
        _run_stage(_family_stage("train", family), _load(params, set_))


@app.command("evaluate")
def evaluate(
    family: FamilyArgument,
    params: ParamsOption = DEFAULT_PARAMS_PATH,
    set_: SetOption = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default the trained best.ckpt).")] = None,
) -> None:
    """Evaluate on val: writes artifacts/metrics/<family>.json, curves and overlays."""
    with _friendly_errors():
        stage = _family_stage("evaluate", family)
        p = _load(params, set_)
        if checkpoint is None:
            _run_stage(stage, p)
            return
        from components.evaluation.stage import evaluate_stage

        results = evaluate_stage(p, family, checkpoint=checkpoint)
        for key, value in sorted(results.items()):
            typer.echo(f"{key}: {value:g}")


@app.command("register")
def register(family: FamilyArgument, params: ParamsOption = DEFAULT_PARAMS_PATH, set_: SetOption = None) -> None:
    """Register the trained model in MLflow; move `champion` only if it beats the current one."""
    with _friendly_errors():
        _run_stage(_family_stage("register", family), _load(params, set_))


@app.command("export")
def export(family: FamilyArgument, params: ParamsOption = DEFAULT_PARAMS_PATH, set_: SetOption = None) -> None:
    """Export the best checkpoint to artifacts/deploy/<family>_fp32.onnx; fails if parity with torch fails."""
    with _friendly_errors():
        _run_stage(_family_stage("export", family), _load(params, set_))


@app.command("quantize")
def quantize(
    family: FamilyArgument,
    backend: Annotated[
        str | None, typer.Option(help="modelopt | onnxruntime | torchao (default: quantize.backends).")
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS_PATH,
    set_: SetOption = None,
) -> None:
    """Quantize (INT8 PTQ) and evaluate on val against FP32; a drop beyond the tolerance is flagged."""
    with _friendly_errors():
        overrides = list(set_ or [])
        if backend:
            overrides.append(f"quantize.backends=[{backend}]")
        p = _load(params, overrides)
        if f"quantize_{family}" in _stage_names():
            _run_stage(f"quantize_{family}", p)
            return
        from components.export.stage import quantize_stage  # a family the pipeline does not quantize

        for key, value in sorted(quantize_stage(p, family).items()):
            typer.echo(f"{key}: {value:g}")


def _stage_names() -> list[str]:
    from components.pipeline.stages import stage_names

    return stage_names()


@label_app.command("mal")
def label_mal(
    coco: Annotated[Path | None, typer.Option(help="COCO instances JSON with the boxes to label.")] = None,
    images: Annotated[Path | None, typer.Option(help="Folder the COCO file_name entries are relative to.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output COCO JSON with RLE segmentations and scores.")] = None,
    pipeline: Annotated[bool, typer.Option(help="Run the label_mal stage (train boxes of the prepared data).")] = False,
    checkpoint: Annotated[Path | None, typer.Option(help="MAL checkpoint (default the trained best.ckpt).")] = None,
    params: ParamsOption = DEFAULT_PARAMS_PATH,
    set_: SetOption = None,
) -> None:
    """Turn box annotations into instance masks with the trained MAL (COCO in, COCO with RLE out)."""
    with _friendly_errors():
        p = _load(params, set_)
        if pipeline:
            _run_stage("label_mal", p)
            return
        if coco is None or images is None or out is None:
            raise ParamsError("label mal needs --coco, --images and --out (or --pipeline)")
        from components.labeling.pipeline import label_file

        summary = label_file(p, coco, images, out, checkpoint)
        typer.echo(
            f"wrote {out}: {summary.annotations} mask(s) on {summary.images} image(s), "
            f"{summary.empty_masks} empty, mean score {summary.mean_score:.3f}"
        )


@label_app.command("cam")
def label_cam(
    out: Annotated[Path | None, typer.Option(help="Output COCO JSON: one box per image called anomalous.")] = None,
    split: Annotated[str, typer.Option(help="Prepared split to label (train | val | test).")] = "train",
    pipeline: Annotated[
        bool, typer.Option(help="Run the label_cam stage (train images -> labels/cam/train.json, for MAL).")
    ] = False,
    checkpoint: Annotated[Path | None, typer.Option(help="CAM checkpoint (default the trained best.ckpt).")] = None,
    params: ParamsOption = DEFAULT_PARAMS_PATH,
    set_: SetOption = None,
) -> None:
    """Image labels in, defect boxes out: the CAM classifier's boxes as COCO, ready for `label mal`."""
    with _friendly_errors():
        p = _load(params, set_)
        if pipeline:
            _run_stage("label_cam", p)
            return
        if out is None:
            raise ParamsError("label cam needs --out (or --pipeline)")
        from components.labeling.cam_boxes import label_cam as write_cam_boxes

        summary = write_cam_boxes(p, split, out, checkpoint)
        typer.echo(
            f"wrote {out}: {summary.boxes} box(es) on {summary.anomalous} of {summary.images} image(s) "
            f"called anomalous (threshold {summary.threshold:.4f}); next: inspectops label mal --coco {out} "
            f"--images {p.datasets_dir} --out <masks.json>"
        )


@infer_app.command("segment")
def infer_segment(
    golden: Annotated[Path, typer.Option(help="Golden image, or a folder of them.")],
    test: Annotated[Path, typer.Option(help="Test image, or a folder paired by file name.")],
    out: Annotated[Path, typer.Option(help="Folder for <name>_mask.png and <name>_overlay.png.")],
    params: ParamsOption = DEFAULT_PARAMS_PATH,
    set_: SetOption = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default the trained best.ckpt).")] = None,
    image_threshold: Annotated[
        float | None,
        typer.Option(help="Call a part DEFECT above this image score (the export sidecar's image_threshold)."),
    ] = None,
    model: ModelOption = None,
) -> None:
    """Predict change masks for golden/test pairs, and each pair's image score (verdicts.csv)."""
    with _friendly_errors():
        if model is not None:  # the registered ONNX bundle at its shipped threshold: no params, no torch model
            from components.serving.infer import load_bundle, run_segment

            bundle = load_bundle(model, "segment", _tracking_uri(params, set_))
            results = run_segment(bundle, golden, test, out)
            called = sum(p.defect for _, p in results)
            typer.echo(
                f"{model} ({bundle.precision}): {len(results)} pair(s), {called} DEFECT at image threshold "
                f"{bundle.threshold}; masks, overlays and verdicts.csv in {out}"
            )
            return
        from components.inference.segment_infer import infer_segment as infer
        from components.training.train import model_dir

        p = _load(params, set_)
        ckpt = checkpoint or model_dir(p, "segment") / "best.ckpt"
        written = infer(
            ckpt,
            golden,
            test,
            out,
            p.data.image_size,
            p.segment.eval.threshold,
            p.segment.eval,
            image_threshold,
            tiling=p.data.tiling,
        )
        typer.echo(f"wrote {len(written)} mask(s) and overlay(s), and verdicts.csv, to {out}")


@infer_app.command("classify")
def infer_classify(
    golden: Annotated[
        Path,
        typer.Option(
            help="Golden: an image (one light), a folder with one image per light, or a folder of such folders (several goldens)."
        ),
    ],
    test: Annotated[
        Path,
        typer.Option(help="Test part: an image (one light) or a folder with one image per light (<name>_<Light>.png)."),
    ],
    params: ParamsOption = DEFAULT_PARAMS_PATH,
    set_: SetOption = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default the trained best.ckpt).")] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Defect above this score (default: classify.eval.threshold, chosen on train when auto)."),
    ] = None,
    model: ModelOption = None,
) -> None:
    """Is this part good? Prints the defect score, the threshold and PASS or DEFECT."""
    with _friendly_errors():
        if model is not None:
            from components.serving.infer import load_bundle, run_classify

            bundle = load_bundle(model, "classify", _tracking_uri(params, set_))
            answer = run_classify(bundle, golden, test)
            typer.echo(
                f"{answer.verdict}: score {answer.score:.4f} (threshold {answer.threshold}, {model}, {bundle.precision})"
            )
            return
        from components.inference.classify_infer import infer_classify as infer
        from components.training.train import model_dir

        p = _load(params, set_)
        from components.models.changenet_classify.module import load_module

        model = load_module(checkpoint or model_dir(p, "classify") / "best.ckpt").model
        if threshold is None:
            from components.models.changenet_classify.evaluate import operating_threshold

            threshold = operating_threshold(model, p)
        size = p.classify.input_size or p.data.image_size
        result = infer(model, golden, test, p.data.lighting_conditions, size, threshold)
        typer.echo(
            f"{result.verdict}: score {result.score:.4f} (threshold {result.threshold:.4f}, "
            f"{len(p.data.lighting_conditions)} light(s), {result.goldens} golden(s))"
        )


@infer_app.command("cam")
def infer_cam(
    images: Annotated[Path, typer.Option(help="An image, or a folder of images (any size; grey is read as RGB).")],
    out: Annotated[
        Path | None, typer.Option(help="Folder for <name>_cam.png overlays and cam_results.csv (optional).")
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS_PATH,
    set_: SetOption = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default the trained best.ckpt).")] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Anomaly above this score (default: cam.eval.threshold, chosen on train when auto)."),
    ] = None,
    model: ModelOption = None,
) -> None:
    """Good or anomaly, and where: one line per image with the score, the call and the CAM box(es)."""
    with _friendly_errors():
        if model is not None:
            from components.serving.infer import load_bundle, run_cam

            bundle = load_bundle(model, "cam", _tracking_uri(params, set_))
            for name, answer in run_cam(bundle, images, out):
                boxes = " ".join(f"[{x1},{y1},{x2},{y2}]" for x1, y1, x2, y2 in answer.boxes)
                typer.echo(
                    f"{name}: {answer.verdict} score {answer.score:.4f} (threshold {answer.threshold}) {boxes}".rstrip()
                )
            return
        from components.inference.cam_infer import infer_cam as infer
        from components.models.cam.evaluate import image_size
        from components.models.family import best_checkpoint, get_family

        p = _load(params, set_)
        family = get_family("cam")
        model = family.load_module(checkpoint or best_checkpoint(p, family)).model
        if threshold is None:
            threshold = family.operating_threshold(model, p)
        for result in infer(model, images, image_size(p), p.cam.eval, threshold, out):
            boxes = " ".join(f"[{x1},{y1},{x2},{y2}]" for x1, y1, x2, y2 in result.boxes)
            typer.echo(
                f"{result.name}: {result.verdict} score {result.score:.4f} (threshold {threshold:.4f}) {boxes}".rstrip()
            )
        if out is not None:
            typer.echo(f"overlays and cam_results.csv in {out}")


@benchmark_app.callback(invoke_without_command=True)
def benchmark(
    ctx: typer.Context,
    model: Annotated[Path | None, typer.Option(help="Model: .ckpt/.pt (pytorch), .onnx, or a TensorRT engine.")] = None,
    runtime: Annotated[str, typer.Option(help="pytorch | onnxruntime | tensorrt")] = "onnxruntime",
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default cpu; tensorrt always runs on cuda).")] = None,
    batch_sizes: Annotated[str | None, typer.Option(help="e.g. 1,8,16,32 (default benchmark.batch_sizes).")] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="pytorch: what it runs in, fp32 | bf16 (autocast) | fp16 (model.half(), cuda only); "
            "onnxruntime: a label (default: read from the ONNX); tensorrt: the build precision."
        ),
    ] = None,
    channels_last: Annotated[
        bool, typer.Option("--channels-last", help="pytorch: weights and inputs in channels-last memory format.")
    ] = False,
    compile_: Annotated[
        bool, typer.Option("--compile", help="pytorch: torch.compile the model (compiled before timing).")
    ] = False,
    compile_mode: Annotated[
        str | None,
        typer.Option(help="With --compile: default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs."),
    ] = None,
    model_version: Annotated[str | None, typer.Option(help="Registry version, for the MLflow tags.")] = None,
    params: ParamsOption = DEFAULT_PARAMS_PATH,
    set_: SetOption = None,
) -> None:
    """Benchmark one model here: JSON under artifacts/reports/benchmarks and MLflow metrics.

    On a GPU: --device cuda, e.g. --runtime pytorch --device cuda --precision fp16 --channels-last --compile.
    """
    if ctx.invoked_subcommand is not None:
        return
    if model is None:
        typer.secho("error: --model is required (or use `inspectops benchmark platform`)", fg="red", err=True)
        raise typer.Exit(code=2)
    from components.benchmarking.bench import parse_batch_sizes, run_benchmark
    from components.benchmarking.variants import cli_variant

    with _friendly_errors():
        variant = cli_variant(runtime, device, precision, channels_last, compile_, compile_mode)
        p = _load(params, set_)
        sizes = parse_batch_sizes(batch_sizes) if batch_sizes else None
        records = run_benchmark(p, model, variant, sizes, model_version=model_version)
        if records:
            typer.echo(f"{records[0]['variant']} on {records[0]['device'] or variant.device}")
        for record in records:
            typer.echo(
                f"batch {record['batch_size']:>3}: {record['pairs_per_second']:.2f} pairs/s, "
                f"latency median {record['latency_median_ms']:.2f} ms, p99 {record['latency_p99_ms']:.2f} ms"
            )


@benchmark_app.command("platform")
def benchmark_platform(
    family: Annotated[str, typer.Argument(metavar="FAMILY", help="segment | classify")] = "segment",
    params: ParamsOption = DEFAULT_PARAMS_PATH,
    set_: SetOption = None,
) -> None:
    """The pipeline stage: time the family's exported models on benchmark.platform and write the comparison table."""
    with _friendly_errors():
        _run_stage(_family_stage("benchmark", family), _load(params, set_))


@pipeline_app.command("run")
def pipeline_run(
    params: ParamsOption = DEFAULT_PARAMS_PATH,
    until: Annotated[str | None, typer.Option(help="Stop after this stage.")] = None,
) -> None:
    """Run the whole pipeline as a Prefect flow, tracked in MLflow."""
    with _friendly_errors():
        load_params(params)
        _quiet_temporary_prefect_server()
        from flows.pipeline import pipeline_flow

        try:
            pipeline_flow(params_path=str(params), until=until)
        except Exception as error:  # Prefect re-raises the failing task's exception
            typer.secho(f"error: pipeline failed: {error}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1) from None


def _quiet_temporary_prefect_server() -> None:
    """Without ``PREFECT_API_URL`` Prefect starts a temporary server on SQLite; its telemetry
    heartbeat then races the flow's first writes and prints ``database is locked`` tracebacks
    (harmless, but a healthy run must not look broken). A machine that reaches no one has no
    use for the heartbeat either; a user's own setting wins.
    """
    import os

    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pipeline_app.command("stages")
def pipeline_stages(params: ParamsOption = DEFAULT_PARAMS_PATH) -> None:
    """List the stages, their upstream stages and whether they apply to these params."""
    from components.pipeline.stages import STAGES, upstream

    with _friendly_errors():
        p = load_params(params)
        for stage in STAGES:
            reason = stage.skip_reason(p)
            applies = f"  (skipped: {reason})" if reason else ""
            after = ", ".join(upstream(stage, p)) or "-"
            typer.echo(f"{stage.name:<18} after: {after:<32} {stage.description}{applies}")


@pipeline_app.command("dvc-yaml")
def pipeline_dvc_yaml(
    check: Annotated[bool, typer.Option(help="Only check that dvc.yaml matches the stage graph.")] = False,
    path: Annotated[Path, typer.Option(help="Where dvc.yaml lives.")] = Path("dvc.yaml"),
) -> None:
    """Render dvc.yaml from the stage graph (the single definition of the pipeline)."""
    from components.pipeline import dvc_yaml

    if check:
        if not dvc_yaml.is_current(path):
            typer.secho(f"{path} is out of date: run `inspectops pipeline dvc-yaml`", fg="red", err=True)
            raise typer.Exit(code=1)
        typer.echo(f"{path} matches the stage graph")
        return
    dvc_yaml.write(path)
    typer.echo(f"wrote {path}")


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":
    main()


@registry_app.command("show")
def registry_show(
    model: Annotated[
        str,
        typer.Argument(
            help="NAME@ALIAS, NAME/VERSION or NAME (its champion), e.g. inspectops-changenet-segment@champion."
        ),
    ],
    params: ParamsOption = DEFAULT_PARAMS_PATH,
    set_: SetOption = None,
) -> None:
    """Print a registered version's model card, then its tags (threshold, gate decision, commit)."""
    from components.registry import describe_version

    with _friendly_errors():
        typer.echo(describe_version(model, _tracking_uri(params, set_)))
