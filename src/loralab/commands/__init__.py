"""One module per command that ties several stages together (a plan with the data it reads, a
recommendation with its training file). `loralab.cli` parses arguments and calls these."""
