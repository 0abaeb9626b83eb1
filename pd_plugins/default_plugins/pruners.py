"""Built-in pruners."""
from pd_plugins import hookimpl

_M = "pd_plugins.pruning"


@hookimpl
def register_pruners(register):
    register("random", f"{_M}.random:RandomPruner", summary="seeded random subset, class-balanced by default")
    register("loss-easy", f"{_M}.loss:LossEasyPruner", summary="per class, keep the lowest converged-scorer loss (Moser et al.)")
    register("loss-hard", f"{_M}.loss:LossHardPruner", summary="per class, keep the highest converged-scorer loss (Moser et al.)")
    register("el2n-window", f"{_M}.el2n:EL2NWindowPruner",
             summary="per class, keep an EL2N percentile window, default 70-80% (Sundar et al.)")
    register("early-loss", f"{_M}.early_loss:EarlyLossPruner",
             summary="per class, keep the lowest early-training loss averaged over trials (Xu et al.)")
