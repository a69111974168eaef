"""FlightMind models in other tools' formats and back: Hugging Face Llama (hf.py), GGUF for llama.cpp
(gguf.py), and ``flightmind import-hf`` (import_hf.py). Imports model code, never training code."""
