"""The library's write API: every change to photos and tags goes through here.

Rules it enforces:
* a photo is identified by path and by content hash: a moved file keeps its row and tags;
* a model run replaces only ``model`` tags; ``manual``/``imported`` tags are never touched, and a
  tag the user removed (``tag_removals``) is not given back by a later run;
* every tag row says where it came from (source, model run, score, time).

:class:`Library` is one object; its parts live by job in ``core`` (photos, sessions), ``tags`` (tag
rows, manual tags, removals, keywords), ``results`` (model runs, predictions, copies) and ``view``
(the JSON shape of a photo).
"""

from phototag.library.core import Library, LibraryError, PhotoFacts
from phototag.library.view import photo_as_dict, search_result_as_dict

__all__ = ["Library", "LibraryError", "PhotoFacts", "photo_as_dict", "search_result_as_dict"]
