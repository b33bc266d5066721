"""Estimates of a planned run, all torch-free arithmetic over architecture records: what autograd
keeps for backward (a replay of each family's forward), model-state memory (weights, adapters,
gradients, optimizer states, ZeRO sharding), the total per device with a verdict, FLOPs and hours."""
