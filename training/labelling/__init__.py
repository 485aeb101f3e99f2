"""Monte-Carlo rollout labels, their agreement with an oracle, and converters from public PRM datasets."""
