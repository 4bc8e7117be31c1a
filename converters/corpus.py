"""Medical text corpora for continued pretraining -> `document` rows.

Accepted layouts (each has a test): plain .txt files (one document per file, titled by the
file name), JSON Lines / JSON / Parquet records with `text`, and MedRAG-style records with
`title` and `content` (or only `contents`). The document body goes to `context`, the title
to `question` (empty when there is none).
"""

from __future__ import annotations

from meddata.convert import Converter, Reject, as_record
from meddata.text import clean


class Corpus(Converter):
    source = "corpus"
    # your own documents: the converter cannot know their terms (--license sets them)
    license = "unknown"
    default_subset = "default"
    #: fields a record of this source has (all of one group)
    signatures = (("text",), ("content",), ("contents",))

    def row(self, rec):
        r = as_record(rec)
        body = clean(r.get("content")) or clean(r.get("text")) or clean(r.get("contents"))
        if body is None:
            raise Reject("missing_field:text", "no non-empty text, content or contents")
        extra = {k: v for k, v in r.items()
                 if k not in ("id", "title", "text", "content", "contents", "PMID")}
        return {
            "source_id": clean(r.get("id")) or clean(r.get("PMID")),
            "task": "document",
            "question": clean(r.get("title")) or "",
            "context": body,
            "meta": extra,
        }
