"""The whole pipeline in one call: ``run_demo(out_dir)`` prepares, pretrains, extracts, evaluates, reports.

Stages, each one library call that a CLI command also makes (so the demo is the recipe of a real run)::

    data     cpcaudio.data.prepare("synthetic", ...)     -> OUT/data        (skipped with data=PREPARED_DIR)
    train    cpcaudio.train.train(...)                   -> OUT/run         (last.pt, metrics.jsonl, ...)
    extract  cpcaudio.extract.extract_to_store(...) -> OUT/features    (context features of every utterance)
    probe    cpcaudio.evaluate.run_probe(...) per task       -> OUT/probe_<task> (results.json, plots)
    abx      cpcaudio.evaluate.abx.run_abx(...)          -> OUT/abx         (ABX error of the phones)
             cpcaudio.evaluate.units_runner.run_units(...) -> OUT/units   (k-means units, PNMI)
    report   figures + report.md + report.html           -> OUT/report.md, OUT/report.html, OUT/figures/

The modules, in the order a run meets them: :mod:`~cpcaudio.demo.presets` (sizes, model configs,
reference speeds), :mod:`~cpcaudio.demo.plan` (the settings, the tasks a dataset supports),
:mod:`~cpcaudio.demo.state` (the folder and ``demo.json``), :mod:`~cpcaudio.demo.stages` (one function
per stage, and :class:`DemoEvent`), :mod:`~cpcaudio.demo.abx_units` (the ``abx`` stage, run when the
dataset has phone alignments, and its part of the report), :mod:`~cpcaudio.demo.pipeline`
(:func:`run_demo`), :mod:`~cpcaudio.demo.page` and :mod:`~cpcaudio.demo.figures` (the report).

**Resuming.** ``OUT/demo.json`` records the plan (every setting that decides the numbers) and the stages
already finished. Run the same call again after an interruption and every finished stage is skipped:
the dataset is complete once its ``meta.json`` exists, training continues from ``run/last.pt`` (exactly:
see :mod:`cpcaudio.train`), extraction continues where its store stopped, and a probe (and each of the
``abx`` stage's two reports) is done once its ``results.json`` is written. A rerun with other settings
into the same folder is refused (pass ``overwrite=True`` to start over).

**Reproducibility.** The number of training steps is *derived from the time budget* (``minutes``) with a
fixed reference speed per preset (:data:`PRESETS`, measured on 2 CPU cores), not measured at run time, so
the same seed and budget always train the same steps and give the same numbers (on the same hardware
and thread count; float results may differ across CPUs). A busier or slower machine takes longer
instead of training less.

**Sizes.** ``default`` on CPU: a 16-speaker, 12-minute synthetic corpus and a 256-channel encoder with a
256-unit GRU (K = 12) trained for about 6 minutes of the 10-minute budget; on a CUDA device the corpus,
the model and the number of steps grow (``default-gpu``). ``tiny``: a 4-speaker corpus and a small model
for tests (about a minute).
"""

from cpcaudio.demo.page import FEATURE_NAMES
from cpcaudio.demo.pipeline import DemoResult, run_demo
from cpcaudio.demo.plan import DemoPlan
from cpcaudio.demo.presets import PRESETS, SIZES, WINDOW_SECONDS, Preset
from cpcaudio.demo.stages import DemoEvent, ProgressCallback
from cpcaudio.demo.state import STATE_FILE

__all__ = [
    "FEATURE_NAMES",
    "PRESETS",
    "SIZES",
    "STATE_FILE",
    "WINDOW_SECONDS",
    "DemoEvent",
    "DemoPlan",
    "DemoResult",
    "Preset",
    "ProgressCallback",
    "run_demo",
]
