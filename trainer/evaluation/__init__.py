"""How good an adapter is: held-out perplexity in llama.cpp, generation statistics, persona attribution,
and the plots.

Torch-free. Imports only `data`, `vault`, `llm` and this room: `home eval` and the worker share it.
"""
