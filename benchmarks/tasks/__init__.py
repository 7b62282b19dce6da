"""The task families and their registry: the config key ``task`` names one of :data:`TASKS`.

Every layer that depends on the family (the run, the tables, the checks before a run, the
regression gate) looks the task up here, once, with :func:`task_of`. Adding a family is one
folder ``benchmarks/tasks/<family>/`` with a :class:`~benchmarks.tasks.base.Task` subclass in
its ``task.py``, and one line below.

Example:
    >>> from benchmarks.config import load_config
    >>> task_of(load_config("configs/vae.yaml")).name
    'latent-variable'
    >>> sorted(TASKS)
    ['classification', 'density', 'latent-variable']
"""

from __future__ import annotations

from benchmarks.config import Config
from benchmarks.errors import ConfigError
from benchmarks.tasks.base import Task
from benchmarks.tasks.classification.task import ClassificationTask
from benchmarks.tasks.density.task import DensityTask
from benchmarks.tasks.vae.task import VAETask

__all__ = ["TASKS", "Task", "task_of"]

TASKS: dict[str, Task] = {
    task.name: task for task in (ClassificationTask(), DensityTask(), VAETask())
}


def task_of(config: Config) -> Task:
    """The task of ``config``, after checking that it names one and that every dataset of the
    config and its profiles is one the task can load.

    Raises:
        ConfigError: an unknown task or dataset (one line naming the config and the choices).
    """
    where = config.path
    if config.task not in TASKS:
        raise ConfigError(
            f"{where}: key 'task': {config.task!r} is not a task; use one of {', '.join(TASKS)}"
        )
    task = TASKS[config.task]
    datasets = list(config.datasets)
    for profile in config.profiles.values():
        datasets += profile.datasets or []
    known = task.dataset_names
    for name in datasets:
        if name not in known:
            raise ConfigError(
                f"{where}: unknown dataset {name!r}; known {config.task} datasets: "
                f"{', '.join(known)}"
            )
    return task
