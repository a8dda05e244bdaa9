"""The demo's ``abx`` stage (ABX error and k-means units of the model and the baselines) and its report part.

The stage makes the two library calls that ``cpcaudio abx`` and ``cpcaudio units`` make::

    cpcaudio.evaluate.abx.run_abx(...)             -> OUT/abx    (results.json, results.md, abx.png)
    cpcaudio.evaluate.units_runner.run_units(...)  -> OUT/units  (results.json, results.md, pnmi.png, one
                                                                  folder of codebook and units per features)

Both score the trained model's context features (the feature store of the ``extract`` stage) next to
MFCC, log-mel and the same architecture with random weights, on the same utterances: every test
utterance and a speaker-balanced part of the train split of at most ``plan.abx_train_seconds``
(:func:`~cpcaudio.demo.plan.train_subset`; for the default sizes the phone probe's utterances). ABX scores
their phone items in every speaker x context mode, keeping at most ``plan.abx_max_size_group`` items per
cell; k-means with ``plan.units_clusters`` units is fitted on their training part, and PNMI is measured
on the test split. The stage runs when the dataset has phone alignments (the ``phone`` task), and each
of its two reports is done once its ``results.json`` exists.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from cpcaudio.demo.plan import DemoPlan, train_subset
from cpcaudio.demo.stages import DemoEvent, Emitter
from cpcaudio.demo.state import ABX_DIR, FEATURES_DIR, UNITS_DIR

STAGE = "abx"
PNMI_SPLIT = "test"
# (speaker mode, context mode) columns of the report, in order: libri-light / ZeroSpeech 2021 first.
ABX_MODES = (("within", "within"), ("across", "within"), ("within", "any"), ("across", "any"))


def runs_abx(plan: DemoPlan) -> bool:
    """Whether the demo has an ``abx`` stage: the dataset has phone alignments."""
    return "phone" in plan.tasks


def mode_name(speaker_mode: str, context_mode: str) -> str:
    """A report column: ``within spk / any ctx``."""
    return f"{speaker_mode} spk / {context_mode} ctx"


def stage_abx(
    out_dir: Path, plan: DemoPlan, dataset_path: Path, device: Any, emit: Emitter
) -> tuple[dict[str, dict[str, Any]], str, bool]:
    """ABX into ``OUT/abx`` and k-means units into ``OUT/units``; each skipped once its report exists.

    Returns:
        (``{"abx": ABX report, "units": units report}`` as in their ``results.json``; summary; skipped).
    """
    from cpcaudio.data import PreparedDataset
    from cpcaudio.evaluate.abx import AbxSettings, run_abx
    from cpcaudio.evaluate.feature_sets import FeatureSetOptions
    from cpcaudio.evaluate.units_runner import run_units

    abx_dir, units_dir = out_dir / ABX_DIR, out_dir / UNITS_DIR
    done = {"abx": abx_dir / "results.json", "units": units_dir / "results.json"}
    reports = {name: json.loads(path.read_text()) for name, path in done.items() if path.is_file()}
    if len(reports) == len(done):
        return reports, f"{done['abx']} and {done['units']} are complete", True
    dataset = PreparedDataset.open(dataset_path)
    utterances = train_subset(dataset, plan.abx_train_seconds)
    subset = "every utterance" if utterances is None else f"{len(utterances)} of {len(dataset)} utterances"
    emit(DemoEvent(
        STAGE, "start",
        message=f"ABX on the phones and k-means units (K = {plan.units_clusters}) of {subset}: CPC vs random init, "
        "MFCC, log-mel",
    ))
    device_name = "cuda" if device.type == "cuda" else "cpu"  # the DTW runs on CPU or CUDA
    options = FeatureSetOptions(features=out_dir / FEATURES_DIR, seed=plan.seed, device=device_name)
    forward = emit.forwarder(STAGE, describe=True)
    if "abx" not in reports:
        settings = AbxSettings(max_size_group=plan.abx_max_size_group)
        reports["abx"] = run_abx(dataset_path, options, settings, utterances=utterances, out=abx_dir,
                                 progress=forward)
    if "units" not in reports:
        reports["units"] = run_units(dataset_path, options, clusters=plan.units_clusters, utterances=utterances,
                                     abx=None, out=units_dir, progress=forward)
    errors, pnmi = abx_table(reports["abx"]), pnmi_table(reports["units"])
    first = mode_name(*ABX_MODES[0])
    summary = (
        f"CPC: ABX {first} {_percent(errors.get(first, {}).get('model'))}, PNMI {_number(pnmi.get('model'))} "
        f"(MFCC: {_percent(errors.get(first, {}).get('mfcc'))}, {_number(pnmi.get('mfcc'))})"
    )
    return reports, summary, False


def abx_table(report: Optional[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{"within spk / within ctx": {"<features>": error in [0, 1]}}`` of an ABX report (modes in
    :data:`ABX_MODES` order; a cell without a defined error is left out)."""
    table: dict[str, dict[str, float]] = {}
    if report is None:
        return table
    for speaker_mode, context_mode in ABX_MODES:
        for row in report["results"]:
            if (row["speaker_mode"], row["context_mode"]) == (speaker_mode, context_mode) and _finite(row["error"]):
                table.setdefault(mode_name(speaker_mode, context_mode), {})[row["features"]] = float(row["error"])
    return table


def pnmi_table(report: Optional[dict[str, Any]], split: str = PNMI_SPLIT) -> dict[str, float]:
    """``{"<features>": PNMI on ``split``}`` of a units report."""
    if report is None:
        return {}
    return {row["features"]: float(row["quality"][split]["pnmi"])
            for row in report["results"] if _finite(row["quality"].get(split, {}).get("pnmi"))}


def report_part(
    reports: dict[str, dict[str, Any]], names: dict[str, str], figures_dir: Path, out_dir: Path
) -> tuple[list[Path], list[Any]]:
    """The figure (``figures/abx_pnmi.png``) and the blocks of the report's ABX / units section.

    Args:
        reports: what :func:`stage_abx` returned (empty: the demo had no ``abx`` stage).
        names: display name per feature kind (the report's order).

    Returns:
        (the PNGs drawn, the page blocks).
    """
    from cpcaudio.demo.figures import abx_pnmi_bars
    from cpcaudio.report.html import Heading, Image, Paragraph, Table

    if not reports:
        return [], []
    errors, pnmi = abx_table(reports.get("abx")), pnmi_table(reports.get("units"))
    units = reports["units"]
    quality = {row["features"]: row["quality"].get(PNMI_SPLIT, {}) for row in units["results"]}
    columns = list(errors)
    kinds = [kind for kind in names if kind in pnmi or any(kind in errors[c] for c in columns)]
    clusters = int(units["clusters"])
    abx = reports["abx"]
    chosen, total = abx["dataset"]["utterances"] or units["dataset"]["of"], units["dataset"]["of"]
    figure = abx_pnmi_bars(errors, pnmi, {kind: names[kind] for kind in kinds}, clusters, figures_dir / "abx_pnmi.png",
                           f"{chosen} of {total} utterances")
    utterances = _utterance_words(chosen, total)
    items = abx["items"]
    pairs = {mode_name(r["speaker_mode"], r["context_mode"]): r["phone_pairs"] for r in abx["results"]
             if r["features"] == abx["results"][0]["features"]}
    rows = [
        [names[kind]] + [_percent(errors[c].get(kind)) for c in columns]
        + [_number(pnmi.get(kind)), _number(quality.get(kind, {}).get("phone_purity")),
           _number(quality.get(kind, {}).get("unit_segment_length"), ".1f")]
        for kind in kinds
    ]
    rows.append(["phone pairs scored"] + [str(pairs.get(c, "-")) for c in columns] + ["", "", ""])
    blocks = [
        Heading("ABX discriminability and k-means units"),
        Paragraph(
            f"ABX error (lower is better; chance 50%) of the same features on the {items['count']} phone items "
            f"({items['phones']} phones, {items['speakers']} speakers) of {utterances} with libri-light's "
            "protocol (angular distance, DTW normalised by the path length, at most "
            f"{abx['settings']['max_size_group']} items per cell, errors averaged over contexts, then speakers, "
            "then phone pairs). *within ctx* is the triphone task of libri-light and ZeroSpeech 2021, *any ctx* "
            "the phoneme task of ZeroSpeech 2024; where few triphones repeat, its errors rest on few phone "
            f"pairs (last row). The k-means units (K = {clusters}, fitted on the training part) are scored on the "
            f"{PNMI_SPLIT} split by PNMI = I(phone; unit) / H(phone), phone purity and the mean run of equal "
            "units (frames)."
        ),
        Table(["features"] + [f"ABX {c}" for c in columns] + ["PNMI", "phone purity", "unit run (frames)"], rows),
        Image(figure.relative_to(out_dir).as_posix(),
              f"Left: ABX error per speaker x context mode (dashed: chance). Right: PNMI of the K = {clusters} "
              "k-means units of each feature set."),
    ]
    return [figure], blocks


def _utterance_words(chosen: int, total: int) -> str:
    if chosen == total:
        return f"all {total} utterances,"
    return f"{chosen} of the {total} utterances (every test utterance and a speaker-balanced part of train),"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _percent(value: Optional[float]) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _number(value: Optional[float], fmt: str = ".3f") -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, fmt)
