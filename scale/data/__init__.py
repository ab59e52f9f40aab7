"""Text data: corpora, tokenizers, the byte-level BPE trainer and the token blocks a run reads."""
