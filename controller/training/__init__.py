"""TrainingRun: pure rendering (:func:`render`) and status mirroring (:func:`compute_status`).

The operator's reconciler wires them: ``result = render(trainingrun, ctx)``; when ``result.problem`` is set,
write ``compute_status(trainingrun, None, problem=result.problem)`` and create nothing; else apply
``result.objects`` (owned by the TrainingRun, replaced when the inputs-hash annotation changes) and
write ``compute_status(trainingrun, job, report=...)`` from the Job and the sidecar's reports.
"""

from modelferry.controller.training.render import RenderContext, RenderResult, render, workload_name
from modelferry.controller.training.status import compute_status, progress_from_log, termination_report
from modelferry.controller.training.validate import Problem, validate

__all__ = [
    "Problem",
    "RenderContext",
    "RenderResult",
    "compute_status",
    "progress_from_log",
    "render",
    "termination_report",
    "validate",
    "workload_name",
]
