"""Taggers: the models that turn decoded photos into tags, embeddings and captions."""
