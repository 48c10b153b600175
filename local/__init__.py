"""Everything that stays on the laptop: the llama.cpp engine, the embedder, the notes index.

Nothing here imports skiff.router, skiff.app or skiff.cloud.
"""
