"""Built-in evaluation protocols."""
from pd_plugins import hookimpl

_M = "pd_plugins.evaluate"


@hookimpl
def register_evaluators(register):
    register("dsa-step", f"{_M}:StepEvaluator", aliases=("dc-step",),
             summary="DC/DM protocol: SGD 0.01 (MTT: learned lr), x0.1 at E/2, DSA during training, final-epoch test")
