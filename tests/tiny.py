"""The tiny-model and repo-copy helpers live in reprotune.testing (bench uses them too)."""

from reprotune.testing import DEFAULT_TOKENIZER, REPO_ROOT, TOKENIZER_FILES, build_tiny_bert, copy_repo, git

__all__ = ["DEFAULT_TOKENIZER", "REPO_ROOT", "TOKENIZER_FILES", "build_tiny_bert", "copy_repo", "git"]
