"""T3 -> S3Gen: the one-shot path (batch.py), streaming, long-text joins, the watermark."""
