"""The host pipeline: data -> prune -> distill -> evaluate. ``context`` is what strategies get from
the host; ``runner`` drives the stages in a run directory."""
