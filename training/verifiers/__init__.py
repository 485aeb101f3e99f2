"""PRM and ORM training: stepwise rows as features, the verifier trainer, judging a checkpoint, the shared stage."""
