"""Planning: exact LoRA parameter counts, matched modules and option tables from module records."""

from loralab.plan.planner import Plan, build_plan

__all__ = ["Plan", "build_plan"]
