"""``midipix``: the command line for people who do not open the Prefect UI."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from storage_schemas.training import TrainConfig


def _ratios(text: str) -> tuple[float, float, float]:
    parts = [float(x) for x in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("give three comma-separated numbers: train,validation,test")
    return tuple(parts)  # type: ignore[return-value]


def _ints(text: str) -> list[int]:
    try:
        return [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"give comma-separated integers, e.g. -2,2; got {text!r}") from None


def _floats2(text: str) -> tuple[float, float]:
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"give two comma-separated numbers, e.g. 0,0.9; got {text!r}")
    return parts[0], parts[1]


def _pitch_range(text: str) -> tuple[int, int]:
    parts = _ints(text)
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"give two pitches, lowest,highest (e.g. 21,108); got {text!r}")
    return parts[0], parts[1]


def _doc(cls: type, name: str) -> str:
    """A config field's help line, with its default: stated once, in the config class."""
    from storage_schemas.encodings import field_default

    default, text = field_default(cls, name), cls.__dataclass_fields__[name].metadata["help"]
    return f"{text} (default: {default})" if default not in (None, ()) else text


def _given(args, names) -> dict:
    """The options among ``names`` that were given on the command line (left-out ones keep the defaults)."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def _build_params(args, roll: dict, encodings: dict):
    from flows.build import AugmentParams, BuildParams, HilbertParams, MaestroOverrides, RollParams
    from tasks.steps.tables import SplitConfig

    return BuildParams(
        source=args.source, store=args.store, name=args.name, strict=args.strict, workers=args.workers,
        split=SplitConfig(mode=args.split, seed=args.split_seed, ratios=args.split_ratios),
        maestro=MaestroOverrides(url=args.maestro_url, sha256=args.maestro_sha256, size=args.maestro_size),
        roll=RollParams(**roll),
        augment=AugmentParams(**_given(args, ("transpositions", "noise_fraction", "seed"))),
        hilbert=HilbertParams(**_given(args, ("order", "sample_rate", "timbre", "audio"))),
        **encodings,
    )


def _first_error(e: ValueError) -> str:
    """One line of a pydantic validation error (field: message), or the error itself."""
    errors = getattr(e, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "__root__")
        msg = str(first.get("msg", e)).removeprefix("Value error, ")
        return f"{where}: {msg}" if where else msg
    return str(e)


def _parser() -> argparse.ArgumentParser:
    from storage_schemas.encodings import (AUDIO_MODES, CONVENTIONS, ENCODINGS, TIMBRES, AugmentConfig, HilbertConfig,
                                           RollConfig, field_default)

    p = argparse.ArgumentParser(prog="midipix", description="Piano MIDI to images and back, on Prefect.")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build the tables of a corpus (a Prefect flow run)")
    b.add_argument("--source", default="generated",
                   help="maestro | maestro-full (MIDI + recordings, 101 GiB) | generated[:N[:MINUTES]] | a folder | "
                        "an fsspec URI or glob (default: generated)")
    b.add_argument("--store", default=None, help="folder or s3://bucket/prefix (default: $MIDIPIX_STORE or ./midipix-data)")
    b.add_argument("--name", default=None, help="table set name (default: from the source)")
    b.add_argument("--split", choices=["auto", "maestro", "random"], default="auto",
                   help="auto: MAESTRO's split where known, else seeded random by piece")
    b.add_argument("--split-seed", type=int, default=0)
    b.add_argument("--split-ratios", type=_ratios, default=(0.7, 0.2, 0.1), help="train,validation,test")
    b.add_argument("--strict", action="store_true",
                   help="fail on unreadable files (MIDI, or recordings) and on pieces left out of images")
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--maestro-url", default=None, help="another copy of the MAESTRO zip (mirror; of the "
                                                        "full one with --source maestro-full)")
    b.add_argument("--maestro-sha256", default=None)
    b.add_argument("--maestro-size", type=int, default=None)
    b.add_argument("--encodings", default=None,
                   help=f"image datasets to render, comma-separated, from {','.join(ENCODINGS)}; 'none' for "
                        "tables only (default: enc1,enc2,enc3)")
    # every default below is the config's own (storage_schemas/encodings.py): an option left out is not sent
    b.add_argument("--resolution", type=float, default=None, dest="resolution_s", help=_doc(RollConfig, "resolution_s"))
    b.add_argument("--columns", type=int, default=None, help=_doc(RollConfig, "columns"))
    b.add_argument("--hop", type=int, default=None, dest="hop_columns", help=_doc(RollConfig, "hop_columns"))
    lo, hi = field_default(RollConfig, "pitch_lo"), field_default(RollConfig, "pitch_hi")
    b.add_argument("--pitch-range", type=_pitch_range, default=None,
                   help=f"lowest,highest MIDI pitch of a roll (default: {lo},{hi}, the piano's keys)")
    b.add_argument("--pedal", action="store_true", default=None, help=_doc(RollConfig, "pedal"))
    b.add_argument("--convention", choices=CONVENTIONS, default=None, help=_doc(RollConfig, "convention"))
    b.add_argument("--transpose", type=_ints, default=None, dest="transpositions",
                   help="augmentation: " + _doc(AugmentConfig, "transpositions"))
    b.add_argument("--noise-fraction", type=float, default=None,
                   help="augmentation: " + _doc(AugmentConfig, "noise_fraction"))
    b.add_argument("--augment-seed", type=int, default=None, dest="seed", help=_doc(AugmentConfig, "seed"))
    b.add_argument("--order", type=int, default=None, help=_doc(HilbertConfig, "order"))
    b.add_argument("--sample-rate", type=int, default=None, help=_doc(HilbertConfig, "sample_rate"))
    b.add_argument("--timbre", choices=TIMBRES, default=None, help="hilbert images: " + _doc(HilbertConfig, "timbre"))
    b.add_argument("--audio", choices=AUDIO_MODES, default=None, help="hilbert images: " + _doc(HilbertConfig, "audio"))
    b.add_argument("--json", action="store_true", help="print the flow's result as JSON")

    v = sub.add_parser("serve", help="register the deployments with a Prefect server and run them here")
    v.add_argument("--cron", default=None, help="rebuild schedule (default: daily 03:00 UTC; 'none' for manual only)")
    v.add_argument("--source", default="generated", help="default source of the scheduled rebuild")
    v.add_argument("--store", default=None, help="default store of the scheduled rebuild")

    dp = sub.add_parser("deploy", help="register the deployments in Prefect process work pools (workers run them)")
    dp.add_argument("--cron", default=None, help="rebuild schedule (default: daily 03:00 UTC; 'none' for manual only)")
    dp.add_argument("--source", default="generated", help="default source of the scheduled rebuild")
    dp.add_argument("--store", default=None, help="default store of the deployments (default: the worker's MIDIPIX_STORE)")
    dp.add_argument("--cpu-pool", default=None, help="work pool of the dataset rebuild (default: midipix-cpu)")
    dp.add_argument("--gpu-pool", default=None, help="work pool of training and its decoded samples (default: midipix-gpu)")

    pl = sub.add_parser("pull", help="copy a dataset version from a store into a local cache (verified)")
    pl.add_argument("store", help="folder or s3://bucket/prefix")
    pl.add_argument("dataset", help="dataset name, e.g. maestro-v3.0.0.enc2")
    pl.add_argument("--to", required=True, help="local cache folder")
    pl.add_argument("--version", default=None, help="a dataset version (default: the published one)")

    d = sub.add_parser("decode", help="turn images back into MIDI (rolls) or WAV (Hilbert images)")
    d.add_argument("image", nargs="?", help="a .npy file: one image (C,H,W) or windows (N,C,H,W)")
    d.add_argument("--encoding", choices=list(ENCODINGS), help="encoding of a .npy image")
    d.add_argument("--store", default=None, help="decode dataset rows from this store instead")
    d.add_argument("--dataset", default=None, help="dataset name (with --store)")
    d.add_argument("--piece", type=int, default=None, help="piece_id whose windows to decode (with --dataset)")
    d.add_argument("--transposition", type=int, default=0)
    d.add_argument("--out", required=True, help="output path without suffix (.mid or .wav is added)")

    pv = sub.add_parser("preview", help="write PNG previews of rolls (pitch axis labelled, onsets marked)")
    pv.add_argument("image", nargs="?", help="a .npy roll (C,H,W)")
    pv.add_argument("--encoding", choices=[n for n, e in ENCODINGS.items() if e.kind == "roll"], default="enc2")
    pv.add_argument("--store", default=None)
    pv.add_argument("--dataset", default=None)
    pv.add_argument("-n", type=int, default=4, help="previews per dataset")
    pv.add_argument("--out", required=True, help="output folder")

    m = sub.add_parser("models", help="list every model with its parameter count, encodings and defaults")
    m.add_argument("--json", action="store_true")

    t = sub.add_parser("train", help="train models on an image dataset (a Prefect flow run)")
    t.add_argument("--model", default="lstm", help="a model, or several comma-separated (a grid)")
    t.add_argument("--encoding", default="enc2", help="an encoding, or several comma-separated (a grid)")
    t.add_argument("--store", default=None)
    t.add_argument("--tables", default=None, help="table set whose image datasets to use (default: the store's "
                                                  "only one)")
    t.add_argument("--dataset", default=None, help="a dataset version (default: the published one)")
    t.add_argument("--data", default=None, help="read shards from this local cache (see: midipix pull)")
    # training options: None leaves TrainConfig's default (stated there only)
    t.add_argument("--epochs", type=int, default=None, help=f"(default {TrainConfig.epochs})")
    t.add_argument("--batch-size", type=int, default=None, help=f"(default {TrainConfig.batch_size})")
    t.add_argument("--lr", type=float, default=None, help=f"(default {TrainConfig.lr})")
    t.add_argument("--seed", type=int, default=None, help=f"(default {TrainConfig.seed})")
    t.add_argument("--max-steps", type=int, default=None, help="training steps per epoch at most")
    t.add_argument("--patience", type=int, default=None, help="early stopping after N epochs without progress")
    t.add_argument("--time-budget", type=float, default=None, dest="time_budget_s", metavar="SECONDS",
                   help="stop each run after this many seconds of training steps (its epoch under way ends there)")
    t.add_argument("--spike-factor", type=float, default=None,
                   help="a loss above F × the best epoch's reloads the best checkpoint and continues with SGD")
    gan = t.add_argument_group("GANs (gan, dcgan, wgan-gp; other models ignore these)")
    gan.add_argument("--n-critic", type=int, default=None,
                     help="critic updates per generator update (default: the model's, `midipix models` shows it)")
    gan.add_argument("--gan-lr", type=float, default=None,
                     help="learning rate of the GAN optimizers (default: the model's; none set: --lr)")
    gan.add_argument("--gan-betas", type=_floats2, default=None, metavar="B1,B2",
                     help="Adam betas of the GAN optimizers (default: the model's; none set: the run's)")
    t.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="change a model config field, e.g. --set 'conv_channels=[32,16,8]'")
    t.add_argument("--preset", choices=["paper"], default=None,
                   help="paper: the paper's settings (unweighted losses, checkpoint by validation loss, seq2seq on "
                        "the first horizon fed its own outputs; GANs: one critic step per generator step, Adam 1e-3, "
                        "betas 0.9/0.999); default: the improved ones. --set and the GAN options win over it")
    t.add_argument("--samples", type=int, default=4, help="samples generated after training")
    t.add_argument("--deployment", default=None, help="submit runs to this deployment (GPU pool) instead")
    t.add_argument("--concurrency", type=int, default=1)
    t.add_argument("--json", action="store_true")

    g = sub.add_parser("generate", help="new music from a trained run: PNG, MIDI and WAV")
    g.add_argument("--model", required=True, help="a run: <run>, models/<run>, its folder, or a checkpoint in it "
                                                  "(…/best.ckpt, …/last.ckpt: that checkpoint; default best)")
    g.add_argument("--store", default=None)
    g.add_argument("--n", type=int, default=4)
    g.add_argument("--seed", type=int, default=0, help="picks the seed windows and seeds the draws")
    g.add_argument("--sampling", choices=["threshold", "sample"], default="sample",
                   help="sample (default): seeded draws; threshold: the run's calibrated per-key thresholds")
    g.add_argument("--temperature", type=float, default=1.0,
                   help="sample: 1 draws as densely as the training data (the run's calibration), towards 0 the "
                        "thresholded output, above 1 flatter (default 1)")
    g.add_argument("--data", default=None, help="read seed windows from this local cache")
    g.add_argument("--out", default=None, help="also copy the files into this folder")

    ev = sub.add_parser("evaluate", help="score every run of a table set and the baselines on its test split "
                                        "(a Prefect flow run); writes report.md, report.html, report.json")
    ev.add_argument("--store", default=None, help="folder or s3://bucket/prefix (default: $MIDIPIX_STORE or ./midipix-data)")
    ev.add_argument("--tables", default=None, help="table set whose runs to score (default: the store's only one)")
    ev.add_argument("--out", required=True, help="folder for report.md, report.html and report.json")
    ev.add_argument("--data", default=None, help="read shards from this local cache (see: midipix pull)")
    ev.add_argument("--max-windows", type=int, default=None, help=_field_help("max_windows"))
    ev.add_argument("--free-windows", type=int, default=None, help=_field_help("free_windows"))
    ev.add_argument("--train-windows", type=int, default=None, help=_field_help("train_windows"))
    ev.add_argument("--seed", type=int, default=None, help=_field_help("seed"))
    ev.add_argument("--sampling", choices=["threshold", "sample"], default=None, help=_field_help("sampling"))
    ev.add_argument("--temperature", type=float, default=None, help=_field_help("temperature"))
    ev.add_argument("--json", action="store_true", help="print the rows as JSON")

    gr = sub.add_parser("grid", help="the reference grid: build a corpus, train every model x encoding within a "
                                     "CPU budget each, then evaluate (a Prefect flow run)")
    gr.add_argument("--source", default="generated:24", help="generated[:N[:MINUTES]], maestro, or a folder")
    gr.add_argument("--pieces", type=int, default=None, help="a local MAESTRO folder: a seeded subset of this many "
                                                              "pieces, in the published split's proportions")
    gr.add_argument("--store", default=None)
    gr.add_argument("--name", default=None, help="table set name (default: from the source)")
    gr.add_argument("--models", default=None, help="comma-separated (default: every paper network and the transformer)")
    gr.add_argument("--encodings", default=None, help="comma-separated (default: enc2,enc3)")
    gr.add_argument("--budget", type=float, default=None, dest="budget_s", metavar="SECONDS",
                    help="seconds of training steps per model (default 240)")
    gr.add_argument("--batch-size", type=int, default=None)
    gr.add_argument("--seed", type=int, default=None)
    gr.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                    help="a model config field for every model that has it (repeatable)")
    gr.add_argument("--max-windows", type=int, default=None, help=_field_help("max_windows"))
    gr.add_argument("--free-windows", type=int, default=None, help=_field_help("free_windows"))
    gr.add_argument("--out", required=True, help="folder for report.md, report.html and report.json")

    s = sub.add_parser("show", help="summarise the table sets in a store")
    s.add_argument("store", nargs="?", default=None, help="folder or s3://bucket/prefix")
    s.add_argument("--name", default=None, help="only this table set")
    s.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from tasks.storage.settings import apply_prefect_defaults, get_settings

    apply_prefect_defaults()
    if args.command == "build":
        from flows.build import run_build

        roll = _given(args, ("resolution_s", "columns", "hop_columns", "pedal", "convention"))
        if args.pitch_range:
            roll["pitch_lo"], roll["pitch_hi"] = args.pitch_range
        encodings = {} if args.encodings is None else {
            "encodings": [] if args.encodings.strip().lower() in ("", "none") else args.encodings.split(",")}
        try:
            params = _build_params(args, roll, encodings)
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            print(f"midipix build: {_first_error(e)}", file=sys.stderr)
            return 2
        result = run_build(params)
        if args.json:
            print(json.dumps(result, indent=1))
        else:
            from tasks.storage.store import Store
            from tasks.steps.summary import format_summary, summarize

            from tasks.steps.summary import dataset_stats, format_datasets

            store = Store(result["store"])
            print(format_summary(summarize(store, result["name"]), result["store"]))
            print(f"  this run: parsed {result['parsed']} files, reused {result['reused']}")
            if result["datasets"]:
                print(format_datasets([dataset_stats(store, d["name"]) for d in result["datasets"]]))
        return 0
    if args.command == "serve":
        from flows.deployments import REBUILD_CRON, serve_deployments

        cron = None if (args.cron or "").lower() == "none" else (args.cron or REBUILD_CRON)
        serve_deployments(cron=cron, source=args.source, store=args.store)
        return 0
    if args.command == "deploy":
        from flows.deployments import CPU_POOL, GPU_POOL, REBUILD_CRON, deploy_to_pools

        cron = None if (args.cron or "").lower() == "none" else (args.cron or REBUILD_CRON)
        pools = deploy_to_pools(cron=cron, source=args.source, store=args.store, cpu_pool=args.cpu_pool or CPU_POOL,
                                gpu_pool=args.gpu_pool or GPU_POOL)
        for pool, names in pools.items():
            print(f"{pool}: {', '.join(names)}  (run them with: prefect worker start --pool {pool})")
        return 0
    if args.command == "models":
        from models.registry import describe_all

        rows = describe_all()
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            width = max(len(r["name"]) for r in rows) + 2
            for r in rows:
                params = ", ".join(f"{e}: {n:,}" for e, n in r["parameters"].items())
                print(f"{r['name']:<{width}}{r['family']:<12}{r['loss']:<36}{params}")
                print(f"{'':<{width}}{r['summary']}")
        return 0
    if args.command == "train":
        return _train(args)
    if args.command == "generate":
        from tasks.steps.sample import generate, resolve_run
        from tasks.storage.store import Store

        store = Store(args.store or get_settings().store)
        try:
            prefix, which = resolve_run(store, args.model)
        except ValueError as e:
            print(f"midipix generate: {e}", file=sys.stderr)
            return 2
        from models.decoding import Sampling

        try:
            sampling = Sampling(mode=args.sampling, temperature=args.temperature, seed=args.seed)
        except ValueError as e:
            print(f"midipix generate: {e}", file=sys.stderr)
            return 2
        for key in generate(store.uri, prefix, n=args.n, seed=args.seed, data_uri=args.data, out_dir=args.out,
                            which=which, sampling=sampling):
            print(store.url(key))
        return 0
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "grid":
        return _grid(args)
    if args.command == "pull":
        from tasks.steps.loader import pull_dataset

        m = pull_dataset(args.store, args.dataset, args.to, args.version)
        print(f"pulled {args.dataset} {m['version']}: {len(m['shards'])} shards, {m['images']} images, "
              f"{m['bytes'] / 1e6:.2f} MB into {args.to}")
        return 0
    if args.command == "decode":
        return _decode(args)
    if args.command == "preview":
        return _preview(args)
    if args.command == "show":
        from tasks.storage.store import Store
        from tasks.steps.summary import format_summary, summarize
        from tasks.steps.tables import list_table_sets

        from tasks.steps.summary import dataset_stats, format_datasets, list_datasets

        store = Store(args.store or get_settings().store)
        names = [args.name] if args.name else list_table_sets(store)
        if not names:
            print(f"no table sets in {store.uri}", file=sys.stderr)
            return 1
        summaries = [summarize(store, n) for n in names]
        datasets = [dataset_stats(store, d) for d in list_datasets(store) if d.rsplit(".", 1)[0] in names]
        if args.json:
            print(json.dumps({"tables": summaries, "datasets": datasets}, indent=1, default=str))
        else:
            print("\n\n".join(format_summary(s, store.uri) for s in summaries))
            if datasets:
                print("\n" + format_datasets(datasets))
        return 0
    return 2


def _field_help(name: str) -> str:
    from flows.evaluate import EvaluateParams

    field = EvaluateParams.model_fields[name]
    return f"{field.description} (default {field.default})"


def _only_table_set(store_uri: str | None, command: str) -> str | None:
    """The store's one table set, or None after printing what to pass."""
    from tasks.steps.tables import list_table_sets
    from tasks.storage.settings import get_settings
    from tasks.storage.store import Store

    store = Store(store_uri or get_settings().store)
    names = list_table_sets(store)
    if len(names) == 1:
        return names[0]
    found = f"table sets {', '.join(names)}" if names else "no table sets (build one: midipix build)"
    print(f"midipix {command}: {store.uri} holds {found}; pick one with --tables", file=sys.stderr)
    return None


def _evaluate(args) -> int:
    from flows.evaluate import EvaluateParams, run_evaluate

    tables = args.tables or _only_table_set(args.store, "evaluate")
    if tables is None:
        return 2
    given = _given(args, ("max_windows", "free_windows", "train_windows", "seed", "sampling", "temperature"))
    try:
        params = EvaluateParams(tables_name=tables, store=args.store, data=args.data, out=args.out, **given)
    except ValueError as e:
        print(f"midipix evaluate: {_first_error(e)}", file=sys.stderr)
        return 2
    try:
        result = run_evaluate(params)
    except (ValueError, FileNotFoundError) as e:
        print(f"midipix evaluate: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result["rows"], indent=1))
    else:
        print(Path(result["report"]["files"]["md"]).read_text())
        for kind, path in result["report"]["files"].items():
            print(f"{kind}: {path}")
    return 0


def _grid(args) -> int:
    from flows.grid import GridParams, run_grid

    given = _given(args, ("source", "pieces", "store", "name", "budget_s", "batch_size", "seed", "out"))
    for key in ("models", "encodings"):
        if getattr(args, key):
            given[key] = [v for v in getattr(args, key).split(",") if v]
    try:
        overrides = {k.strip(): json.loads(v) for k, _, v in (item.partition("=") for item in args.set)}
        evaluate = _given(args, ("max_windows", "free_windows"))
        params = GridParams(**given, model_overrides=overrides, evaluate=evaluate)
    except ValueError as e:  # a bad --set value (json) or a bad field (pydantic)
        print(f"midipix grid: {_first_error(e)}", file=sys.stderr)
        return 2
    try:
        result = run_grid(params)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"midipix grid: {e}", file=sys.stderr)
        return 2
    print(Path(result["report"]["files"]["md"]).read_text())
    for kind, path in result["report"]["files"].items():
        print(f"{kind}: {path}")
    return 0


def _train(args) -> int:
    from pydantic import ValidationError

    from flows.train import TrainGridParams, TrainOneParams, run_train_grid, run_train_one

    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.strip()] = json.loads(value)
    models = [m for m in args.model.split(",") if m]
    encodings = [e for e in args.encoding.split(",") if e]
    tables = args.tables or _only_table_set(args.store, "train")
    if tables is None:
        return 2
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
             "max_steps_per_epoch": args.max_steps, "early_stopping_patience": args.patience,
             "spike_factor": args.spike_factor, "time_budget_s": args.time_budget_s}
    try:
        one = TrainOneParams(model=models[0], encoding=encodings[0], tables_name=tables, store=args.store,
                             data=args.data, dataset_version=args.dataset, model_overrides=overrides,
                             train={k: v for k, v in given.items() if v is not None}, samples=args.samples,
                             gan={"n_critic": args.n_critic, "lr": args.gan_lr, "betas": args.gan_betas},
                             preset=args.preset)
    except ValidationError as e:
        print(f"midipix train: {_first_error(e)}", file=sys.stderr)
        return 2
    if len(models) == 1 and len(encodings) == 1 and not args.deployment:
        results = [run_train_one(one)]
    else:
        results = run_train_grid(TrainGridParams(models=models, encodings=encodings, run=one,
                                                 deployment=args.deployment, concurrency=args.concurrency))
    if args.json:
        print(json.dumps(results, indent=1, default=str))
        return 0
    for r in results:
        if "run" not in r:
            print(f"{r['model']} × {r['encoding']}: flow run {r['flow_run']} {r['state']}")
            continue
        last = r["history"][-1] if r["history"] else {}
        print(f"{r['run']}: {r['parameters']:,} parameters, {r['epochs']} epochs, "
              f"train loss {last.get('train_loss')}, val loss {last.get('val_loss')}, "
              f"val onset F1 {last.get('val_onset_f1')}, "
              f"{last.get('samples_per_s') or 0:.0f} samples/s, data wait {100 * (last.get('data_wait_share') or 0):.1f} %")
        for key in r.get("samples", []):
            print(f"  {key}")
    return 0


def _config_for_image(encoding: str, image):
    """The config of a bare image file: an audio image's side gives its curve's order; a roll's rows count
    up from the piano's lowest key (from pitch 0 when it has more rows than that leaves) and its columns
    are the window."""
    from storage_schemas.encodings import RollConfig, field_default, get_encoding

    enc = get_encoding(encoding)
    if enc.kind == "audio":
        return enc.config(order=image.shape[-1].bit_length() - 1)
    rows, lo = image.shape[-2], field_default(RollConfig, "pitch_lo")
    lo = lo if lo + rows <= 128 else 0
    return enc.config(columns=image.shape[-1], pitch_lo=lo, pitch_hi=lo + rows - 1)


def _decode(args) -> int:
    from pathlib import Path

    import numpy as np

    from storage_schemas.encodings import config_from_dict
    from tasks.steps.decode import decode_to_files, piece_images

    if args.store and args.dataset and args.piece is not None:
        from tasks.storage.store import Store

        images, starts, manifest = piece_images(Store(args.store), args.dataset, args.piece, args.transposition)
        config = config_from_dict(manifest["config"])
    elif args.image and args.encoding:
        images, starts = np.load(args.image), None
        config = _config_for_image(args.encoding, images)
    else:
        print("give an IMAGE.npy with --encoding, or --store, --dataset and --piece", file=sys.stderr)
        return 2
    for path in decode_to_files(images, config, Path(args.out), starts):
        print(path)
    return 0


def _preview(args) -> int:
    from pathlib import Path

    from tasks.storage.files import atomic_write

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.store and args.dataset:
        from tasks.steps.preview import dataset_previews
        from tasks.storage.store import Store

        pictures = dataset_previews(Store(args.store), args.dataset, args.n)
    elif args.image:
        import numpy as np

        from tasks.steps.preview import roll_png

        image = np.load(args.image)
        pictures = [(Path(args.image).stem, roll_png(image, _config_for_image(args.encoding, image)))]
    else:
        print("give an IMAGE.npy, or --store and --dataset", file=sys.stderr)
        return 2
    for i, (caption, png) in enumerate(pictures):
        path = out / f"preview-{i:02d}.png"
        atomic_write(path, png)
        print(f"{path}  {caption}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
