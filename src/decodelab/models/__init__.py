"""Adapters: the only code that touches a model object."""
from .base import CausalLM, Counter, Step, prefill, sync
from .hf import HFCausalLM
from .toy import ToyLM

__all__ = ["CausalLM", "Counter", "Step", "prefill", "sync", "HFCausalLM", "ToyLM"]
