"""Studies: many training runs as one experiment (`loralab study`, `loralab ablate`), each run its own
process, with resume, failure diagnosis, decision rules between phases and MLflow tracking."""
