"""The label- and augmentation-robust scores of DD-Ranking (Li et al., arXiv 2505.13300), as pure functions.

Accuracies are fractions in [0, 1], one per evaluation network; the arrays of one call are
paired by network (network ``r`` of every term shares its seed). Every score is computed per
network and then summarised as mean ± std over networks (:func:`mean_std`).

* hard-label recovery  ``HLR = Acc_real-hard - Acc_syn-hard``
* improvement over random  ``IOR = Acc_syn-any - Acc_rdm-any``
* label-robust score  ``LRS = (e^α - e^-1) / (e - e^-1)`` with ``α = w·IOR - (1 - w)·HLR``
* augmentation-robust score  ``ARS = (e^β - e^-1) / (e - e^-1)`` with
  ``β = γ·(Acc_syn-aug - Acc_rdm-aug) + (1 - γ)·(Acc_syn-naug - Acc_rdm-naug)``

With accuracies as fractions, α and β lie in [-1, 1] and LRS/ARS in [0, 1] (the paper prints
them ×100 %). A set that scores exactly like its reference (α = 0 or β = 0) gets
:data:`NEUTRAL` = (1 - e^-1) / (e - e^-1) ≈ 0.2689. docs/evaluation.md has the derivation and
how DD-Ranking's code departs from these formulas.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np

Accuracies = Union[float, Sequence[float], np.ndarray]

#: LRS/ARS of α = 0 (β = 0): the set does exactly as well as its reference
NEUTRAL = (1.0 - math.exp(-1.0)) / (math.e - math.exp(-1.0))


def _fractions(values: Accuracies, name: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=float))
    if arr.size == 0:
        raise ValueError(f"{name}: no accuracies")
    if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(f"{name}: accuracies must be fractions in [0, 1] (not percent), got {arr.tolist()}")
    return arr


def _weight(value: float, name: str) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _paired(**arrays: np.ndarray) -> None:
    sizes = {name: a.size for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"accuracies are paired by network; got different counts {sizes}")


def exp_normalise(x: Accuracies) -> np.ndarray:
    """``(e^x - e^-1) / (e - e^-1)``: maps x in [-1, 1] onto [0, 1] (x = 0 gives :data:`NEUTRAL`)."""
    x = np.asarray(x, dtype=float)
    return (np.exp(x) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


def hard_label_recovery(acc_real_hard: Accuracies, acc_syn_hard: Accuracies) -> np.ndarray:
    """HLR per network: how far the set trained with hard labels stays below the real pool (lower is better)."""
    real, syn = _fractions(acc_real_hard, "Acc_real-hard"), _fractions(acc_syn_hard, "Acc_syn-hard")
    _paired(real=real, syn=syn)
    return real - syn


def improvement_over_random(acc_syn_any: Accuracies, acc_rdm_any: Accuracies) -> np.ndarray:
    """IOR per network: the set's gain over a random real subset of the same size, both evaluated alike."""
    syn, rdm = _fractions(acc_syn_any, "Acc_syn-any"), _fractions(acc_rdm_any, "Acc_rdm-any")
    _paired(syn=syn, rdm=rdm)
    return syn - rdm


def label_robust_score(hlr: Accuracies, ior: Accuracies, w: float = 0.5) -> np.ndarray:
    """LRS per network from HLR and IOR (fractions): ``exp_normalise(w·IOR - (1 - w)·HLR)``."""
    w = _weight(w, "the LRS weight w")
    hlr, ior = np.atleast_1d(np.asarray(hlr, dtype=float)), np.atleast_1d(np.asarray(ior, dtype=float))
    _paired(hlr=hlr, ior=ior)
    if np.abs(hlr).max() > 1.0 or np.abs(ior).max() > 1.0:
        raise ValueError("HLR and IOR are differences of fractions, in [-1, 1] (not percentage points)")
    return exp_normalise(w * ior - (1.0 - w) * hlr)


def augmentation_robust_score(acc_syn_aug: Accuracies, acc_rdm_aug: Accuracies, acc_syn_naug: Accuracies,
                              acc_rdm_naug: Accuracies, gamma: float = 0.5) -> np.ndarray:
    """ARS per network: ``exp_normalise(γ·(syn_aug - rdm_aug) + (1 - γ)·(syn_naug - rdm_naug))``."""
    gamma = _weight(gamma, "the ARS weight γ")
    arrays = {"syn_aug": _fractions(acc_syn_aug, "Acc_syn-aug"), "rdm_aug": _fractions(acc_rdm_aug, "Acc_rdm-aug"),
              "syn_naug": _fractions(acc_syn_naug, "Acc_syn-naug"), "rdm_naug": _fractions(acc_rdm_naug, "Acc_rdm-naug")}
    _paired(**arrays)
    beta = gamma * (arrays["syn_aug"] - arrays["rdm_aug"]) + (1.0 - gamma) * (arrays["syn_naug"] - arrays["rdm_naug"])
    return exp_normalise(beta)


def mean_std(values: Accuracies) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for one value) over networks."""
    arr = np.atleast_1d(np.asarray(values, dtype=float))
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


TERMS = {  # score -> the accuracy terms it needs
    "hlr": ("real_hard", "syn_hard"),
    "ior": ("syn_any", "rdm_any"),
    "lrs": ("real_hard", "syn_hard", "syn_any", "rdm_any"),
    "ars": ("syn_aug", "rdm_aug", "syn_naug", "rdm_naug"),
}


def scores(accs: dict, which: Sequence[str], *, w: float = 0.5, gamma: float = 0.5) -> dict:
    """Per-network values and mean ± std of the scores ``which`` (``hlr``, ``ior``, ``lrs``, ``ars``) from
    the accuracy terms in ``accs`` (``real_hard``, ``syn_hard``, ``syn_any``, ``rdm_any``, ``syn_aug``, ...)."""
    unknown = set(which) - set(TERMS)
    if unknown:
        raise ValueError(f"unknown score(s) {sorted(unknown)}; choose from {', '.join(TERMS)}")
    missing = sorted({t for s in which for t in TERMS[s]} - set(accs))
    if missing:
        raise ValueError(f"scores {list(which)} need the accuracy terms {missing}")
    values: dict[str, np.ndarray] = {}
    if {"hlr", "lrs"} & set(which):
        values["hlr"] = hard_label_recovery(accs["real_hard"], accs["syn_hard"])
    if {"ior", "lrs"} & set(which):
        values["ior"] = improvement_over_random(accs["syn_any"], accs["rdm_any"])
    if "lrs" in which:
        values["lrs"] = label_robust_score(values["hlr"], values["ior"], w)
    if "ars" in which:
        values["ars"] = augmentation_robust_score(accs["syn_aug"], accs["rdm_aug"], accs["syn_naug"],
                                                  accs["rdm_naug"], gamma)
    out = {}
    for name in which:
        mean, std = mean_std(values[name])
        out[name] = {"mean": mean, "std": std, "values": [float(v) for v in values[name]]}
    return out
