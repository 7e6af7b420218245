"""Online prediction for `reprotune-predict` and `reprotune-serve`: checked input records
(`records`), checked model folders (`loading`), tokenization without per-request
`datasets` work (`online`), batching across requests (`batcher`) and the HTTP app (`app`)."""
