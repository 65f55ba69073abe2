"""Hydra's basic sweeper whose launcher skips finished jobs (normexp/sweep.py). Hydra takes sweepers only from
the ``hydra_plugins`` package; Hydra imports every module here at start-up, so this one imports little."""

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class SkipFinishedSweeper(BasicSweeper):
    def setup(self, *, hydra_context, task_function, config) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        from normexp.sweep import SkipFinished

        self.launcher = SkipFinished(self.launcher, hydra_context.config_loader, config)
