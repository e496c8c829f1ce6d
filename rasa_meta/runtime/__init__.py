"""Runtime: what `rasa run` loads. Encoder, heads, in-scope scoring and the plain model.

Nothing here imports training or tooling code; serving stays light.
"""
