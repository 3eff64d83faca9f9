"""Hugging Face tokenizers from the local cache only (the paper profile's GPT-2 tokenizer).

Never touches the network: a tokenizer that is not cached raises `TokenizerMissing` at once,
naming the model and the command that fetches it on a connected machine.
"""
from __future__ import annotations


class TokenizerMissing(RuntimeError):
    pass


def hf_tokenizer(name: str = "gpt2"):
    """`name`'s tokenizer from the local Hugging Face cache (local_files_only=True)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as e:  # OSError / LocalEntryNotFoundError / ValueError, by version
        raise TokenizerMissing(
            f"tokenizer of {name!r} is not in the local Hugging Face cache "
            f"(HF_HOME={_hf_home()}). Fetch it on a connected machine with "
            f"`hf download {name}` (or `huggingface-cli download {name}`), then copy the cache. "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None


def gpt2_tokenizer():
    """GPT-2's tokenizer (local cache only), for the paper profile's task batches."""
    return hf_tokenizer("gpt2")


def _hf_home() -> str:
    import os
    return os.environ.get("HF_HOME", "~/.cache/huggingface")
