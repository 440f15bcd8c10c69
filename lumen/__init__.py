"""LUMEN: optimization-centric failure recovery for distributed LLM serving."""

__version__ = "0.1.0"
