"""Score every trained run of a table set, and the baselines, on its test split (no Prefect here).

What is scored, per roll encoding whose first channel is the note state (enc2, enc3), on the dataset's
test windows (original pitch, no noise; a seeded subsample of at most ``max_windows``), with ``start`` the
middle column (100 of 200):

- *teacher-forced*: every column ``start .. T-1`` predicted from all real columns before it;
  ``next_column_frame_f1`` (lit pixels) and ``next_column_onset_f1`` (onset pixels), micro-averaged over
  keys x columns x windows. Sequence models and the baselines.
- *free-running*: ``start`` seed columns, ``T - start`` generated; note-level F1 against the true
  continuation (mir_eval, onsets within 50 ms), the distribution distances of Yang & Lerch (2018) against
  the test continuations (overlap area and KL per feature), note density and mean polyphony, and their
  ratios to the test split's. GANs, which start from noise, are scored on the same columns of their
  samples, against the same reference, without note F1.
- the autoencoder: reconstruction error on test audio, and the style-transfer distances when a
  ``hilbert-guitar`` dataset exists.

Every row of the result is ``{"name", "kind", "model", "encoding", "metric", "value", "n"}`` with ``kind``
``"run"`` or ``"baseline"``; :func:`write_report` turns rows into ``report.json``, ``report.md`` and a
self-contained ``report.html``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from storage_schemas.encodings import CHANNEL_NAMES, ENCODINGS, config_from_dict
from tasks.storage.files import atomic_write
from tasks.storage.store import Store

__all__ = ["EvalSettings", "ROW_KEYS", "find_runs", "evaluate", "write_report", "findings"]

ROW_KEYS = ("name", "kind", "model", "encoding", "metric", "value", "n")
FLOOR = "random-at-density"  # the floor every model must beat
CEILING = "real-vs-real"  # the ceiling of the distribution metrics


@dataclass(frozen=True)
class EvalSettings:
    """How much of the test split to score, and how runs sample.

    Parameters
    ----------
    max_windows : int
        Test windows scored teacher-forced (a seeded subsample; all when fewer).
    free_windows : int
        Of those, windows continued free-running by each model and baseline (generation is the slow part).
    train_windows : int
        Training windows the baselines are fitted on.
    seed : int
        Seeds the subsamples, the baselines' draws and the runs' sampling.
    sampling : str
        ``"sample"`` or ``"threshold"``: how runs turn scores into notes when they run free
        (:class:`models.decoding.Sampling`); teacher-forced predictions always use the thresholds.
    temperature : float
        Sampling temperature (``sampling="sample"``).
    """

    max_windows: int = 1000
    free_windows: int = 128
    train_windows: int = 2000
    seed: int = 0
    sampling: str = "sample"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if min(self.max_windows, self.free_windows, self.train_windows) < 1:
            raise ValueError("max_windows, free_windows and train_windows must be >= 1")
        if self.sampling not in ("threshold", "sample"):
            raise ValueError(f"sampling must be 'threshold' or 'sample', got {self.sampling!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- what the store holds ----------------------------------------------------------------------------


def find_runs(store: Store, tables: str) -> list[dict]:
    """The metas of the runs trained on datasets of table set ``tables`` (from each run's ``history.json``),
    ordered by model, encoding and run name."""
    metas = []
    for key in store.list("models"):
        parts = key.split("/")
        if len(parts) != 3 or parts[2] != "history.json":
            continue
        meta = json.loads(store.read_bytes(key))["meta"]
        if meta["dataset"]["name"].rsplit(".", 1)[0] == tables:
            metas.append(meta)
    return sorted(metas, key=lambda m: (m["model"], m["encoding"], m["run"]))


def _datasets(store: Store, tables: str) -> list[str]:
    from tasks.steps.summary import list_datasets

    return [n for n in list_datasets(store) if n.rsplit(".", 1)[0] == tables]


@dataclass
class _Windows:
    """Original (untransposed, noiseless) windows of one split of one dataset version."""

    images: np.ndarray  # (N, C, rows, T) uint8 (float32 for Hilbert images)
    piece_id: np.ndarray  # (N,)
    config: Any


def _load(data_uri: str, name: str, version: str | None, split: str, limit: int, seed: int) -> _Windows:
    from tasks.steps.loader import ShardDataset, read_dataset_manifest

    manifest = read_dataset_manifest(Store(data_uri), name, version)
    config = config_from_dict(manifest["config"])
    ds = ShardDataset(data_uri, name, split, batch_size=512, shuffle=False, version=manifest["version"])
    images, pieces = [], []
    for batch, meta in ds:
        keep = ((meta["transposition"] == 0) & (meta["noise_seed"] < 0)).numpy()
        if keep.any():
            images.append(batch.numpy()[keep])
            pieces.append(meta["piece_id"].numpy()[keep])
    if not images:
        return _Windows(np.zeros((0, *config.shape), np.uint8), np.zeros(0, np.int64), config)
    images_a, pieces_a = np.concatenate(images), np.concatenate(pieces)
    if images_a.shape[0] > limit:  # a seeded subsample, kept in dataset order
        pick = np.sort(np.random.default_rng(seed).choice(images_a.shape[0], limit, replace=False))
        images_a, pieces_a = images_a[pick], pieces_a[pick]
    return _Windows(images_a, pieces_a, config)


# -- rows ----------------------------------------------------------------------------------------------


def _rows(name: str, kind: str, model: str, encoding: str, metrics: dict[str, float], n: int) -> list[dict]:
    return [{"name": name, "kind": kind, "model": model, "encoding": encoding, "metric": k, "value": float(v),
             "n": int(n)} for k, v in metrics.items() if v is not None and np.isfinite(v)]


_FREE_KEEP = ("note_f1", "note_precision", "note_recall", "note_density", "mean_polyphony", "note_density_ratio",
              "mean_polyphony_ratio")


def _free_metrics(generated: np.ndarray, reference, truth: np.ndarray | None, config, seed: int) -> dict[str, float]:
    """Free-running scores of continuations ``generated`` (N, rows, T') against the test continuations
    (``reference``, a :func:`tasks.kernels.metrics.reference_set`): note F1 against ``truth`` when given,
    overlap and KL of each distribution feature, note density, mean polyphony and their ratios."""
    from tasks.kernels.metrics import summarise

    out = summarise(generated, reference, config.resolution_s, config.pitch_lo, true_continuations=truth, seed=seed)
    return {k: v for k, v in out.items() if k in _FREE_KEEP or k.endswith(("_overlap", "_kl"))}


def _batched(fn: Callable[[Any], np.ndarray], images: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([fn(images[i:i + batch]) for i in range(0, images.shape[0], batch)])


# -- the evaluation ----------------------------------------------------------------------------------


def _roll_section(store: Store, data_uri: str, dataset: str, runs: list[dict], settings: EvalSettings,
                  log: Callable[[str], None]) -> list[dict]:
    """Baselines and runs on one roll dataset (the published version; a run is scored on its own version)."""
    import torch

    from models.decoding import Sampling
    from tasks.kernels import baselines as B
    from tasks.kernels.metrics import next_column_f1, reference_set

    encoding = dataset.rsplit(".", 1)[1]
    test = _load(data_uri, dataset, None, "test", settings.max_windows, settings.seed)
    if test.images.shape[0] == 0:
        log(f"{dataset}: no test windows; nothing to score")
        return []
    train = _load(data_uri, dataset, None, "train", settings.train_windows, settings.seed)
    cfg = test.config
    T = test.images.shape[-1]
    start = T // 2
    states = test.images[:, 0]  # (N, rows, T)
    truth = states[:, :, start:]
    n_free = min(settings.free_windows, states.shape[0])
    # the free-running windows: a seeded choice across the scored ones (not the first pieces in order)
    free = np.sort(np.random.default_rng(settings.seed + 1).choice(states.shape[0], n_free, replace=False))
    free_truth = truth[free]
    reference = reference_set(truth, cfg.resolution_s, cfg.pitch_lo)  # the test continuations, computed once
    rows: list[dict] = []
    log(f"{dataset}: {states.shape[0]} test windows ({n_free} free-running), columns {start}..{T - 1} scored; "
        f"baselines fitted on {train.images.shape[0]} training windows")
    fitted = B.fit(train.images[:, 0] if train.images.shape[0] else states)
    for name in B.BASELINES:
        t0 = time.perf_counter()
        pred = B.teacher_forced(name, states, start, fitted, seed=settings.seed)
        metrics = {k: v for k, v in next_column_f1(pred, truth).items() if k.startswith("next_column_")}
        rows += _rows(name, "baseline", name, encoding, metrics, states.shape[0])
        gen = B.free_running(name, states[free], start, fitted, seed=settings.seed)
        rows += _rows(name, "baseline", name, encoding,
                      _free_metrics(gen, reference, free_truth, cfg, settings.seed), n_free)
        log(f"  baseline {name}: {time.perf_counter() - t0:.1f} s")
    sampling = Sampling(settings.sampling, settings.temperature, settings.seed)
    if runs:
        from tasks.steps.sample import load_calibration, load_run
    for meta in runs:
        t0 = time.perf_counter()
        label = f"{meta['model']} ({meta['run']})"
        try:
            _, spec, model_config, nets = load_run(store, f"models/{meta['run']}")
            calibration = load_calibration(store, f"models/{meta['run']}")
        except FileNotFoundError as e:
            log(f"  run {label}: skipped ({e})")
            continue
        if meta["dataset"]["version"] != _version(data_uri, dataset):
            log(f"  run {label}: trained on dataset version {meta['dataset']['version']}, scored on the "
                f"published one")
        with torch.no_grad():
            if hasattr(spec, "teacher_forced"):  # sequence models: they continue real windows
                images = torch.from_numpy(test.images)
                pred = _batched(lambda x: spec.teacher_forced(model_config, nets, x, start, calibration),
                                images)
                metrics = {k: v for k, v in next_column_f1(pred, truth).items() if k.startswith("next_column_")}
                rows += _rows(meta["run"], "run", meta["model"], encoding, metrics, states.shape[0])
                torch.manual_seed(settings.seed)
                gen = _batched(lambda x: spec.sample(model_config, nets, x.shape[0], encoding, x, calibration,
                                                     sampling)[:, 0, :, start:], images[free])
                scores = _free_metrics(gen, reference, free_truth, cfg, settings.seed)
            else:  # generators from noise: the same columns of their samples, no continuation to match
                torch.manual_seed(settings.seed)
                gen = np.concatenate([spec.sample(model_config, nets, min(64, n_free - i), encoding, None,
                                                  calibration, sampling)[:, 0, :, start:]
                                      for i in range(0, n_free, 64)])
                scores = _free_metrics(gen, reference, None, cfg, settings.seed)
        rows += _rows(meta["run"], "run", meta["model"], encoding, scores, n_free)
        log(f"  run {label}: {time.perf_counter() - t0:.1f} s")
    return rows


def _version(data_uri: str, dataset: str) -> str:
    from tasks.steps.loader import read_dataset_manifest

    return read_dataset_manifest(Store(data_uri), dataset)["version"]


def _audio_section(store: Store, data_uri: str, dataset: str, runs: list[dict], settings: EvalSettings,
                   log: Callable[[str], None]) -> list[dict]:
    """The autoencoder runs on one Hilbert dataset: reconstruction error on test audio, style transfer."""
    import torch

    from tasks.steps.sample import load_run, style_transfer

    test = _load(data_uri, dataset, None, "test", settings.max_windows, settings.seed)
    rows: list[dict] = []
    for meta in runs:
        _, spec, _, nets = load_run(store, f"models/{meta['run']}")
        x = torch.from_numpy(test.images.astype(np.float32))
        if x.shape[0] == 0:
            log(f"{dataset}: no test windows; {meta['run']} not scored")
            continue
        with torch.no_grad():
            y = torch.cat([nets["model"](x[i:i + 64]) for i in range(0, x.shape[0], 64)])
        metrics = {"reconstruction_mse": float(((y - x) ** 2).mean())}
        report = style_transfer(data_uri, dataset, nets["model"], 0)
        if report is not None:
            st = report[0]
            metrics.update({"style_mse_guitar_vs_piano": st["mse_guitar_vs_piano"],
                            "style_mse_output_vs_piano": st["mse_output_vs_piano"],
                            "style_moves_toward_piano": float(st["mse_output_vs_piano"] < st["mse_guitar_vs_piano"])})
        rows += _rows(meta["run"], "run", meta["model"], dataset.rsplit(".", 1)[1], metrics, x.shape[0])
        log(f"  run {meta['run']}: reconstruction MSE {metrics['reconstruction_mse']:.4g}")
    return rows


def evaluate(store_uri: str, tables: str, settings: EvalSettings = EvalSettings(), data_uri: str | None = None,
             log: Callable[[str], None] = print) -> list[dict]:
    """Rows scoring every run of table set ``tables`` and the baselines on its test split.

    ``data_uri``: where the image datasets are read from (a pulled local cache; default the store). With no
    runs, the baselines alone. Raises ``ValueError`` when the table set has no image datasets.
    """
    store = Store(store_uri)
    data = data_uri or store.uri
    datasets = _datasets(Store(data), tables)
    if not datasets:
        raise ValueError(f"no image datasets of table set {tables!r} in {data}; build them first "
                         f"(midipix build --name {tables} ...)")
    runs = find_runs(store, tables)
    rows: list[dict] = []
    for dataset in datasets:
        encoding = dataset.rsplit(".", 1)[1]
        mine = [m for m in runs if m["dataset"]["name"] == dataset]
        spec = ENCODINGS.get(encoding)
        if spec is None:
            continue
        if spec.kind == "roll" and CHANNEL_NAMES[encoding][0] == "state":
            rows += _roll_section(store, data, dataset, mine, settings, log)
        elif spec.kind == "audio" and mine:
            rows += _audio_section(store, data, dataset, mine, settings, log)
        elif mine:
            log(f"{dataset}: {len(mine)} run(s) not scored: {encoding} images hold no note state to score")
    return rows


# -- findings and reports -------------------------------------------------------------------------------


def _table(rows: list[dict]) -> dict[tuple[str, str], dict[str, float]]:
    """``{(encoding, name): {metric: value}}``."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        out.setdefault((r["encoding"], r["name"]), {})[r["metric"]] = r["value"]
    return out


def findings(rows: list[dict]) -> list[str]:
    """Plain sentences on what the rows say: which runs fall below the floor, which are degenerate."""
    table = _table(rows)
    kinds = {(r["encoding"], r["name"]): (r["kind"], r["model"]) for r in rows}
    lines = []
    for (enc, name), m in sorted(table.items()):
        kind, model = kinds[(enc, name)]
        if kind != "run":
            continue
        floor = table.get((enc, FLOOR), {})
        label = f"{model} on {enc} ({name})"
        for metric in ("next_column_onset_f1", "note_f1"):
            if metric in m and metric in floor and m[metric] <= floor[metric]:
                lines.append(f"{label}: {metric} {m[metric]:.3f} does not beat the floor ({FLOOR} "
                             f"{floor[metric]:.3f}).")
        for metric in ("note_density_ratio", "mean_polyphony_ratio"):
            if metric in m and not 0.5 <= m[metric] <= 2.0:
                lines.append(f"{label}: {metric} {m[metric]:.2f} is outside 0.5–2 (degenerate output).")
    if not any(kind == "run" for kind, _ in kinds.values()):
        return ["No runs yet: the baselines alone."]
    return lines or ["Every run beats the floor and stays within 0.5–2× of the test split's density and polyphony."]


MAIN_METRICS = ("next_column_frame_f1", "next_column_onset_f1", "note_f1", "note_density_ratio",
                "mean_polyphony_ratio", "reconstruction_mse")


def _cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The report's table: its header and one list of cells per (encoding, name), baselines first."""
    table = _table(rows)
    kinds = {(r["encoding"], r["name"]): (r["kind"], r["model"]) for r in rows}
    overlap = sorted({r["metric"] for r in rows if r["metric"].endswith("_overlap")})
    cols = [c for c in MAIN_METRICS if any(c in m for m in table.values())] + overlap
    header = ["encoding", "name", "kind", "model", *(c.replace("_", " ") for c in cols)]
    body = []
    for (enc, name), m in sorted(table.items(), key=lambda kv: (kv[0][0], kinds[kv[0]][0], kv[0][1])):
        kind, model = kinds[(enc, name)]
        body.append([enc, name, kind, model, *(f"{m[c]:.3f}" if c in m else "" for c in cols)])
    return header, body


def _markdown(rows: list[dict], title: str, notes: list[str]) -> str:
    header, body = _cells(rows)
    out = [f"# {title}", "", *[f"- {n}" for n in notes], ""]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "---|" * len(header))
    out += ["| " + " | ".join(cells) + " |" for cells in body]
    out += ["", "## Findings", "", *[f"- {line}" for line in findings(rows)], ""]
    return "\n".join(out)


def _plot(rows: list[dict]) -> list[tuple[str, bytes]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = _table(rows)
    plots = []
    for metric in ("next_column_onset_f1", "note_f1", "note_density_ratio"):
        items = sorted((k, m[metric]) for k, m in table.items() if metric in m)
        if not items:
            continue
        fig, ax = plt.subplots(figsize=(8, 0.3 * len(items) + 1.2))
        ax.barh([f"{enc} · {name}" for (enc, name), _ in items], [v for _, v in items], color="#4a7ab5")
        if metric == "note_density_ratio":
            ax.axvspan(0.5, 2.0, color="#cfe8cf", zorder=0, label="0.5–2× of the test split")
            ax.legend(loc="lower right")
        ax.set_xlabel(metric.replace("_", " "))
        ax.invert_yaxis()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        plots.append((metric, buf.getvalue()))
    return plots


def _html(rows: list[dict], title: str, notes: list[str]) -> str:
    header, cells_by_row = _cells(rows)
    body = ["<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title>",
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
            "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:nth-child(-n+4){text-align:left}"
            "tr.baseline{background:#f4f4f4}</style></head><body>",
            f"<h1>{html.escape(title)}</h1><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"]
    body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>")
    for cells in cells_by_row:  # cells[2] is the kind: baselines shaded
        body.append(f"<tr class='{html.escape(cells[2])}'>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                    + "</tr>")
    body.append("</table>")
    body.append("<h2>Findings</h2><ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in findings(rows)) + "</ul>")
    for metric, png in _plot(rows):
        body.append(f"<h2>{html.escape(metric.replace('_', ' '))}</h2><img alt='{html.escape(metric)}' "
                    f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    body.append("</body></html>")
    return "\n".join(body)


def write_report(rows: list[dict], out_dir: str | Path, title: str, notes: list[str] = ()) -> dict[str, str]:
    """``report.json`` (the rows), ``report.md`` and a self-contained ``report.html`` (plots inlined) in
    ``out_dir``; each written whole or not at all. Returns ``{"json", "md", "html"}`` paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bad = [r for r in rows if tuple(r) != ROW_KEYS or not math.isfinite(r["value"])]
    if bad:
        raise ValueError(f"rows must have keys {ROW_KEYS} and finite values, got {bad[0]}")
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    atomic_write(paths["json"], json.dumps(rows, indent=1).encode())
    atomic_write(paths["md"], _markdown(rows, title, list(notes)).encode())
    atomic_write(paths["html"], _html(rows, title, list(notes)).encode())
    return {k: str(v) for k, v in paths.items()}
