"""Near-copy detection among instructions with ROUGE-L (the `rouge-score` package)."""

from __future__ import annotations

from rouge_score import rouge_scorer, tokenizers


class RougePool:
    """A growing set of texts; `most_similar` returns the top ROUGE-L F1 against the pool."""

    def __init__(self, texts: list[str] | None = None) -> None:
        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self._tokenizer = tokenizers.DefaultTokenizer(use_stemmer=False)
        self._texts: list[str] = []
        self._tokens: list[list[str]] = []
        for text in texts or []:
            self.add(text)

    def add(self, text: str) -> None:
        """Add `text` to the pool."""
        self._texts.append(text)
        self._tokens.append(self._tokenizer.tokenize(text))

    def most_similar(self, text: str) -> tuple[float, str]:
        """(best ROUGE-L F1, the pool text reaching it); (0.0, "") for an empty pool."""
        tokens = self._tokenizer.tokenize(text)
        best, nearest = 0.0, ""
        for other, other_tokens in zip(self._texts, self._tokens, strict=True):
            score = rouge_scorer._score_lcs(other_tokens, tokens).fmeasure
            if score > best:
                best, nearest = score, other
        return best, nearest

    def __len__(self) -> int:
        return len(self._texts)
