from normexp.lrmap.cli import cli

cli()
