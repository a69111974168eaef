"""The GPT and its configuration: ``from flightmind.model import GPT, GPTConfig``."""

from flightmind.model.config import GPTConfig
from flightmind.model.gpt import GPT, Block, KVCache

__all__ = ["GPT", "GPTConfig", "Block", "KVCache"]
