"""The files of one model's index: ``<home>/index/<stem>.faiss`` and its manifest ``<stem>.json``.

The manifest records which state of the ``embeddings`` table the index file reflects (a
:class:`~phototag.search.embeddings.TableState`) and the index file's size; it is written last,
so a torn write of the index file is detected (sizes differ) and repaired by a rebuild.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from phototag.search.embeddings import TableState

MANIFEST_VERSION = 1


def index_dir(home: Path | str) -> Path:
    return Path(home) / "index"


def index_stem(model_id: str) -> str:
    """A file name for ``model_id``: readable, and unique even when sanitising merges names."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._") or "model"
    digest = hashlib.sha1(model_id.encode("utf-8")).hexdigest()[:8]
    return f"{safe[:80]}-{digest}"


@dataclass
class Manifest:
    model_id: str
    dim: int
    kind: str
    count: int  # live vectors in the index
    table: TableState
    index_file: str
    index_bytes: int
    built_at: str
    version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> "Manifest":
        data = json.loads(raw)
        data["table"] = TableState(**data["table"])
        return cls(**data)
