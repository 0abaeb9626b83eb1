from pd_plugins.cli import cli

cli(prog_name="pd-run")
