"""Stage 2, pruning: the built-in pruners (one module per method: ``random``, ``loss``, ``el2n``,
``early_loss``; ``trained`` is their scorer-network base), and what they share: the selection
rule (``selection``), scorer training and scores (``scoring``, ``score_cache``), the prune
report (``report``) and Xu et al.'s runtime pruning inside distillation (``runtime_prune``)."""
