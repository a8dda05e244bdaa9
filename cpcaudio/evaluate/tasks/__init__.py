"""The probe tasks, one module each, and the table that names them.

``run_probe``, ``cpcaudio probe --task`` and the demo read :data:`TASKS`. Adding a task means one
:class:`~cpcaudio.evaluate.tasks.base.ProbeTask` subclass in one module here, and one entry below.
"""

from __future__ import annotations

from cpcaudio.errors import UsageError
from cpcaudio.evaluate.tasks.base import ProbeTask
from cpcaudio.evaluate.tasks.classes import ClassTask
from cpcaudio.evaluate.tasks.phone import PhoneTask
from cpcaudio.evaluate.tasks.speaker import SpeakerTask

TASKS: dict[str, ProbeTask] = {task.name: task for task in (PhoneTask(), SpeakerTask(), ClassTask())}


def get_task(name: str) -> ProbeTask:
    """The task called ``name``.

    Raises:
        UsageError: no task has that name.
    """
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def task_help() -> str:
    """``--task``'s help: every task with its summary."""
    described = [f"{task.name} ({task.summary})" for task in TASKS.values()]
    return ", ".join(described[:-1]) + " or " + described[-1] if len(described) > 1 else described[0]


__all__ = ["TASKS", "ClassTask", "PhoneTask", "ProbeTask", "SpeakerTask", "get_task", "task_help"]
