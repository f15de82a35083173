"""NanoResearch SDPO trainer: turns a user's (x, y, feedback) history into a LoRA adapter for the planner."""

__version__ = "0.1.0"
