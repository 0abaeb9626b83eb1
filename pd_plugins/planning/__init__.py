"""Planning a run before running it: what each stage costs in memory and time (``pd-run plan``) and
the check of a run's estimated peak memory against the free memory before it starts."""
