"""Stage 3, distillation: the built-in distillers (one module per method: ``dc``, ``dm``, ``mtt``,
``glad``, ``ld3m``, and the ``coreset`` baselines), and what they share: matching objectives
(``objectives``), the synthetic set and iteration loop (``synthetic``), MTT expert trajectories
(``experts``), the base of real-image selections (``real_selection``), coreset selection rules
(``selection_rules``) and generative priors (``generative``)."""
