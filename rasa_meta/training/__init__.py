"""Training: corpora, episodes, losses, meta-training and the inner loop run at `rasa train`."""
