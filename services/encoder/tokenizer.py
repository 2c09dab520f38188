"""Text tokenizers, chosen by the model package's `tokenizer.kind`: CLIP's byte-level BPE (below) and
WordPiece from a Hugging Face tokenizer.json (`WordPieceTokenizer`, BERT-family text towers).

CLIP's text tokenizer: byte-level BPE over 49,408 tokens, 77-token context.

Built with the Hugging Face `tokenizers` library (the BPE merges run in Rust, with its word cache) from
CLIP's own merges file, and made identical to the reference (OpenCLIP's `SimpleTokenizer`, itself
OpenAI's) step by step:

1. clean: `ftfy.fix_text`, HTML-unescape twice, strip, collapse whitespace (`" ".join(text.split())`),
   lowercase;
2. split into words with CLIP's regex (special tokens, English contractions, runs of letters, single
   digits, runs of other non-space characters); everything else (whitespace) is dropped;
3. byte-level BPE on each word with `</w>` marking the end of the word;
4. `[<start_of_text>] + ids + [<end_of_text>]`, truncated to the context as the reference does: keep
   the first `context_length` ids and overwrite the last one with `<end_of_text>`; zero padded.

Step 2 runs in Python with the `regex` module and the reference pattern verbatim, so that a literal
"<end_of_text>" inside a word is split exactly as the reference splits it; `tokenizers` then BPE-encodes
the pre-split words. `tests/encoder/test_tokenizer.py` compares ids with the reference.
"""

from __future__ import annotations

import gzip
import html
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import ftfy
import numpy as np
import regex
from tokenizers import Tokenizer, models, pre_tokenizers

VOCAB_PATH = Path(__file__).resolve().parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
TOKENIZER_NAME = "clip-bpe-49408"
CONTEXT_LENGTH = 77
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
# CLIP uses the first 49152 - 256 - 2 merges of the file (line 0 is a version header).
_N_MERGES = 49152 - 256 - 2
_WORD_PATTERN = regex.compile(
    START_OF_TEXT + "|" + END_OF_TEXT + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def _byte_alphabet() -> list[str]:
    """GPT-2's reversible byte -> printable character table, in CLIP's vocabulary order.

    Printable Latin-1 bytes map to themselves; the other 68 bytes map to code points 256.. in byte order.
    The order fixes the ids of the first 512 tokens (the 256 characters, then the same with `</w>`).
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = [chr(b) for b in printable]
    extra = 0
    for b in range(256):
        if b not in printable:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def clean_text(text: str) -> str:
    """CLIP's text normalisation (the reference's `clean='lower'`)."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


@dataclass(frozen=True)
class TokenizedTexts:
    """Token ids of a batch of texts, ready for the text tower."""

    ids: np.ndarray  # int64 [n, length], zero padded
    truncated: list[bool]  # the text had more tokens than the context holds
    empty: list[bool]  # nothing was left after cleaning (whitespace only, or control characters)
    attention_mask: np.ndarray | None = None  # int64 [n, length]: 1 on tokens, 0 on padding

    def tensors(self) -> dict[str, np.ndarray]:
        """The text tower's inputs by their conventional names (a package's text inputs are among these)."""
        out = {"input_ids": self.ids}
        if self.attention_mask is not None:
            out["attention_mask"] = self.attention_mask
        return out

    def rows(self, keep: list[int]) -> TokenizedTexts:
        """The given rows only (padding is left as it is: zeros beyond a row's mask change nothing)."""
        mask = None if self.attention_mask is None else self.attention_mask[keep]
        return TokenizedTexts(
            self.ids[keep], [self.truncated[i] for i in keep], [self.empty[i] for i in keep], mask
        )


class ClipTokenizer:
    """Tokenizes texts into CLIP's [n, 77] int64 id matrix."""

    def __init__(self, vocab_path: Path = VOCAB_PATH, context_length: int = CONTEXT_LENGTH) -> None:
        with gzip.open(vocab_path, "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : _N_MERGES + 1]]
        alphabet = _byte_alphabet()
        tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
        tokens += [START_OF_TEXT, END_OF_TEXT]
        vocab = {tok: i for i, tok in enumerate(tokens)}
        bpe = models.BPE(
            vocab=vocab,
            merges=[(a, b) for a, b in merges],
            end_of_word_suffix="</w>",
            continuing_subword_prefix="",
            fuse_unk=False,
        )
        self._tokenizer = Tokenizer(bpe)
        # Each pre-split word is mapped byte by byte onto the alphabet above (no further splitting).
        self._tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        self.vocab_size = len(vocab)
        self.sot_id = vocab[START_OF_TEXT]
        self.eot_id = vocab[END_OF_TEXT]
        self._special = {START_OF_TEXT: self.sot_id, END_OF_TEXT: self.eot_id}
        self.context_length = context_length
        self.name = TOKENIZER_NAME

    def encode_ids(self, text: str) -> list[int]:
        """BPE ids of one text without start/end tokens and without truncation."""
        return self._encode_words(_WORD_PATTERN.findall(clean_text(text)))

    def _encode_words(self, words: list[str]) -> list[int]:
        ids: list[int] = []
        plain: list[str] = []

        def flush() -> None:
            if plain:
                enc = self._tokenizer.encode(plain, is_pretokenized=True, add_special_tokens=False)
                ids.extend(enc.ids)
                plain.clear()

        for word in words:
            special = self._special.get(word)
            if special is None:
                plain.append(word)
            else:  # the reference maps a literal special-token word to its id
                flush()
                ids.append(special)
        flush()
        return ids

    def __call__(self, texts: list[str]) -> TokenizedTexts:
        n, ctx = len(texts), self.context_length
        out = np.zeros((n, ctx), dtype=np.int64)
        # Every word yields at least one token and only the first ctx - 2 tokens are kept, so words past
        # the first ctx cannot change the output (and len(words) >= ctx already means "truncated").
        words = [_WORD_PATTERN.findall(clean_text(text)) for text in texts]
        bodies: list[list[int] | None] = [None] * n
        plain = [i for i, w in enumerate(words) if not any(x in self._special for x in w[:ctx])]
        if plain:  # one call into the Rust side for the common case
            encs = self._tokenizer.encode_batch(
                [words[i][:ctx] for i in plain], is_pretokenized=True, add_special_tokens=False
            )
            for i, enc in zip(plain, encs, strict=True):
                bodies[i] = enc.ids
        truncated: list[bool] = []
        for i in range(n):
            body = bodies[i]
            if body is None:
                body = self._encode_words(words[i][:ctx])
            ids = [self.sot_id, *body, self.eot_id]
            truncated.append(len(ids) > ctx)
            if len(ids) > ctx:
                ids = ids[:ctx]
                ids[-1] = self.eot_id
            out[i, : len(ids)] = ids
        return TokenizedTexts(ids=out, truncated=truncated, empty=[not w for w in words])


@lru_cache(maxsize=4)
def shared_tokenizer(context_length: int = CONTEXT_LENGTH) -> ClipTokenizer:
    """One tokenizer per context length per process (building the vocabulary takes ~0.2 s)."""
    return ClipTokenizer(context_length=context_length)


class WordPieceTokenizer:
    """WordPiece (BERT-style) from a Hugging Face tokenizer.json, as the model was trained with it: the
    file's own normaliser (lowercasing, accent stripping, control characters dropped) and pre-tokenizer,
    `[CLS] ... [SEP]`, truncated to `max_length` tokens, padded with id 0 to the batch's longest row
    (the text tower's mean pooling reads the attention mask, so padding does not change a vector)."""

    name = "wordpiece"

    def __init__(self, path: Path, max_length: int) -> None:
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self.context_length = max_length
        self.vocab_size = self._tokenizer.get_vocab_size()

    def __call__(self, texts: list[str]) -> TokenizedTexts:
        encodings = self._tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        empty = []
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = e.attention_mask
            # Nothing but the special tokens: the text had no content after normalisation.
            empty.append(sum(e.special_tokens_mask) == len(e.ids))
        truncated = [bool(e.overflowing) for e in encodings]
        return TokenizedTexts(ids=ids, truncated=truncated, empty=empty, attention_mask=mask)


TextTokenizer = ClipTokenizer | WordPieceTokenizer


def tokenizer_for(kind: str, max_length: int, path: Path | None) -> TextTokenizer:
    """The tokenizer a model package names (its kind, context and tokenizer.json)."""
    if kind == "wordpiece":
        if path is None:
            raise ValueError("a wordpiece tokenizer needs its tokenizer.json")
        return _shared_wordpiece(path, max_length)
    return shared_tokenizer(max_length)


@lru_cache(maxsize=4)
def _shared_wordpiece(path: Path, max_length: int) -> WordPieceTokenizer:
    return WordPieceTokenizer(path, max_length)
