"""Built-in extra commands: ``pd-run experts`` (MTT expert trajectories)."""
from pd_plugins import hookimpl


@hookimpl
def register_commands(cli):
    import click

    from pd_plugins.cli.flags import (build_config, driver_output, executor_flags, make_executor_from,
                                      print_summary, run_flags, show_traceback)

    @cli.command("experts")
    @run_flags
    @executor_flags
    @click.pass_context
    def experts_cmd(ctx, **params):
        """Train (or reuse) MTT expert trajectories on the pruned set (the full set with --mode init/init-random).

        Experts use the mtt distiller's options (-D experts=N -D train_epochs=E -D lr_teacher=...)
        and are cached under PD_CACHE_DIR (default: <out>/../.pd-cache), keyed by the data
        fingerprint, model, optimiser, augmentation and seed; an interrupted run resumes at the
        first missing expert, and `pd-run run --distiller mtt` reuses them.
        """
        from pd_plugins.pipeline.runner import Run

        show_traceback(ctx, params.get("traceback", False))
        params["distiller"] = "mtt"
        with make_executor_from(params) as executor, driver_output(executor.kind):
            run = Run(build_config(ctx, params), overwrite=params.get("overwrite", False), executor=executor)
            with run.lock():
                # never marked done: a finished directory is reused, a different run refused
                run.prepare_dir(("experts",))
                train = run.data().train
                pruned = run.prune_stage.get(train.fingerprint())
                data = pruned.apply(train) if run.cfg.mode == "pool" else train
                directory, trained = run.distiller.experts(data, run.context("experts"))
        print_summary({"experts_dir": str(directory), "experts": run.distiller.options.experts,
                       "trained_now": trained, "pool_size": len(data),
                       "expert_batch": run.distiller.recipe(len(data)).batch,
                       **({"tasks_per_node": executor.tasks_per_node} if executor.tasks_per_node else {})},
                      params.get("as_json", False))
