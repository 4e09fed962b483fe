"""The chatterbot-corpus intent utterances, read without torch (their count is checked before dispatch)."""

from __future__ import annotations

from pathlib import Path


def intent_utterances() -> tuple[list[str], list[int], list[str]]:
    """Every utterance of every conversation in chatterbot-corpus's English files, labelled by file."""
    import chatterbot_corpus
    import yaml

    root = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    texts, labels, names = [], [], []
    for label, path in enumerate(sorted(root.glob("*.yml"))):
        names.append(path.stem)
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in doc.get("conversations") or []:
            for utterance in conversation:
                if utterance is not None and str(utterance).strip():
                    texts.append(str(utterance).strip())
                    labels.append(label)
    return texts, labels, names
