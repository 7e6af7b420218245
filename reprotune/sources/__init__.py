"""The download stage's shared readers: local formats, the Hub, split carving."""
