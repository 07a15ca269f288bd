"""Corpora into token shards: resolve a source spec (`corpus`), tokenize it once (`prepare`), and keep the
result as verified shards (`shards`) in a content-keyed cache (`cache`). No Lightning here."""
