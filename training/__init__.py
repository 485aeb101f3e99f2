"""ponder.training: the stages (one module each), recipe parsing, the `ponder` command and the toy world."""
