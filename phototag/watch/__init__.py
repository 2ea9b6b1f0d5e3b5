"""``phototag watch``: keep a library tagged while photos arrive, move and disappear.

One module per job, tied together by :class:`phototag.watch.daemon.Watcher`:

* :mod:`~phototag.watch.mounts` — which filesystem a root is on (network filesystems are polled);
* :mod:`~phototag.watch.observers` — the watchdog observers (the platform's own, or polling);
* :mod:`~phototag.watch.events` — what an event means: debounce, moves, deletes, sidecars;
* :mod:`~phototag.watch.roots` — roots paused and resumed, the reconcile and catch-up passes;
* :mod:`~phototag.watch.consumer` — claims from the work queue become the pipeline's jobs;
* :mod:`~phototag.watch.hotswap` — a new default model, background re-tagging;
* :mod:`~phototag.watch.daemon` — the watcher and its loops; a fatal error stops it non-zero;
* :mod:`~phototag.watch.lock`, :mod:`~phototag.watch.state`, :mod:`~phototag.watch.logs` — what the
  daemon leaves in the home (``watch.lock``, ``watch.json``) and how it logs;
* :mod:`~phototag.watch.service` — the systemd user unit of ``phototag service install``.

Nothing is imported here: ``phototag status`` reads the lock and the state file without loading
watchdog, and the lock imports ``fcntl`` only when it locks.
"""
