"""The one part of `plan` that runs torch: one real training step of the shrunken twin, measured
term by term (`loralab plan --measure`, and the reference of the estimate tests)."""
