from normexp.reproduce.command import cli

cli()
