"""discover → fingerprint → decode → batch → infer → persist → after-commit hooks.

Shared by ``scan``, ``watch`` and ``retag``; one module per job:

* :mod:`~phototag.pipeline.classify` — which found files need work: unchanged / moved / a copy of a
  tagged photo / a sidecar another app changed / the model; ``scan`` claims each file that needs
  the model in the work queue before decoding it (:meth:`phototag.ingest.queue.WorkQueue.claim_path`):
  two scans of one library, or a scan and the watcher, never tag one file twice; a file another live
  process holds is left to it;
* :mod:`~phototag.pipeline.stages` — :class:`Pipeline`: decoding in the decode pool (Pillow, EXIF,
  the tagger's ``prepare``; :mod:`phototag.ingest.pool`), inference in the calling thread (the one
  owner of the model; batches flush on size or after ``batch_timeout`` seconds), storing in a
  writer thread — or all of it in the calling thread (``sequential=True``, for tests);
* :mod:`~phototag.pipeline.store` — each batch is persisted in one transaction (photos, tags,
  embeddings, captions, and the removal of the batch's work-queue rows), so a crash never leaves
  half a batch; a batch that fails for a reason that is not the database's (a value SQLite cannot
  store) is stored again photo by photo, and the photo that fails is recorded as that photo's error;
* :mod:`~phototag.pipeline.probe` — a suspect file decoded alone in a child process;
* :mod:`~phototag.pipeline.jobs` — what flows through: :class:`Job`, the :class:`Report`.

Two kinds of job need no model: a photo whose XMP sidecar another app changed (its keywords are
read again: two-way sync, ``docs/sync.md``) and a byte-identical copy of a photo the same model
(same weights and settings) already tagged (its model tags, embedding and caption are copied).
"""

from phototag.pipeline.jobs import Job, PersistError, Report
from phototag.pipeline.probe import probe_decode, probe_in_child
from phototag.pipeline.stages import Pipeline
from phototag.pipeline.store import database_failed

__all__ = ["Job", "PersistError", "Pipeline", "Report", "database_failed", "probe_decode", "probe_in_child"]
