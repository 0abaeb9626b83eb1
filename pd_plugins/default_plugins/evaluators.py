"""Built-in evaluation protocols, named for the paper tables they reproduce (algorithms.md section 6)."""
from pd_plugins import hookimpl

_M = "pd_plugins.training.evaluate"


@hookimpl
def register_evaluators(register):
    register("dsa-step", f"{_M}:StepEvaluator", aliases=("dsa-step-1000",),
             summary="DSA/DM tables (default): E=1000 (+1 pass), SGD 0.01 (MTT: learned lr), x0.1 after pass "
                     "E//2+1, DSA, final test")
    register("dc-step", f"{_M}:DCStepEvaluator",
             summary="DC tables (CIFAR/SVHN): E=300 (+1 pass), SGD 0.01, x0.1 after pass E//2+1, no augmentation")
    register("mtt-step-lr", f"{_M}:MTTStepEvaluator",
             summary="MTT tables: E=1000 (+1 pass), learned lr, x0.1 after pass E//2+1, DSA, final set only")
    register("glad-ema-cosine", f"{_M}:GladEvaluator",
             summary="GLaD/LD3M/Moser tables: 1000 epochs, lr 1e-3 (VGG11 1e-4), warm-up + cosine, DSA, EMA tested")
