"""Test-time compute on the local model: a torch training copy of the GGUF's weights, LoRA
adapters trained on it and written in llama.cpp's GGUF adapter format."""
