"""The one resolver of model names: which tagger a name means.

A name is ``builtin``, a fine-tuned version in the home (``phototag finetune``), an installed model
pack or a plugin's tagger, in that order; the user's per-tag thresholds (``phototag calibrate
--apply``) are applied on top. Every command gets its tagger from :func:`get_tagger`.

The modules are imported when a tagger is asked for, not with the registry: ``phototag --help``
imports the commands, and they must not pull in numpy or torch.
"""

from __future__ import annotations

from phototag.config import Settings
from phototag.tagging.base import Tagger, TaggerError, TaggerInfo

BUILTIN = "builtin"


def _pack_names(settings: Settings) -> list[str]:
    from phototag.tagging.packs import list_packs

    return [p.name for p in list_packs(settings.models_dir)]


def _plugin_taggers(settings: Settings) -> dict[str, Tagger]:
    from phototag.plugins import taggers

    return {t.name: t for t in taggers(settings)}


def get_tagger(settings: Settings, name: str | None = None, *, user_thresholds: bool = True) -> Tagger:
    """The tagger called ``name`` (default: the configured default model), as the user tuned it: a
    fine-tuned version is loaded as such, and the thresholds learned by ``phototag calibrate --apply``
    are applied — unless ``user_thresholds`` is False (calibration fits them on the bare model)."""
    from phototag.tagging.versions import ThresholdedTagger, read_user_thresholds

    name = name or settings.default_model
    tagger = _version_or_model(settings, name)
    thresholds = read_user_thresholds(settings, name) if user_thresholds else {}
    return ThresholdedTagger(tagger, thresholds) if thresholds else tagger


def _version_or_model(settings: Settings, name: str) -> Tagger:
    from phototag.tagging.versions import load_finetuned_tagger, read_version

    version = read_version(settings, name) if name != BUILTIN else None
    if version is None:
        return _model(settings, name)
    # a fine-tuned version of a pack runs where its pack does, with the head laid over (versions.py)
    pack = _model(settings, version["base_pack"]) if version.get("base") == "pack" else None
    return load_finetuned_tagger(settings, name, version, pack)


def _model(settings: Settings, name: str) -> Tagger:
    """The built-in model, a model pack or a plugin's tagger (no version, no user thresholds)."""
    if name == BUILTIN:
        from phototag.tagging.builtin import BuiltinTagger

        return BuiltinTagger.from_settings(settings)
    if name in _pack_names(settings):
        from phototag.tagging.packs import load_pack_tagger

        return load_pack_tagger(
            settings.models_dir, name,
            device=settings.get("device"), precision=settings.get("precision"),
            threshold=settings.get("threshold"), backend=settings.get("backend"),
        )
    plugin_taggers = _plugin_taggers(settings)
    if name in plugin_taggers:
        return plugin_taggers[name]
    known = [BUILTIN, *_pack_names(settings), *plugin_taggers]
    raise TaggerError(
        f"unknown model {name!r}; known: {', '.join(known)}. "
        "Add RAM/RAM++/Tag2Text weights with: phototag models add NAME --checkpoint FILE --tags FILE"
    )


def list_taggers(settings: Settings) -> list[TaggerInfo]:
    """Every model name :func:`get_tagger` resolves: the built-in model, packs, fine-tuned versions and
    plugin taggers (nothing is loaded)."""
    from phototag.tagging.packs import list_packs
    from phototag.tagging.versions import list_versions

    default = settings.default_model
    infos = [TaggerInfo(BUILTIN, "builtin/efficientnet-lite0", "builtin",
                        "EfficientNet-Lite0 (ImageNet) + face detection; ships with phototag",
                        is_default=default == BUILTIN)]
    for pack in list_packs(settings.models_dir):
        infos.append(TaggerInfo(pack.name, getattr(pack, "model_id", pack.name), "pack",
                                getattr(pack, "description", ""), is_default=default == pack.name))
    for version in list_versions(settings):
        name = version.get("name", "")
        infos.append(TaggerInfo(name, version.get("model_id", name), "finetuned",
                                f"fine-tuned from {version.get('based_on') or version.get('base', '?')}",
                                is_default=default == name))
    for tagger in _plugin_taggers(settings).values():
        infos.append(TaggerInfo(tagger.name, tagger.model_id, "plugin", (tagger.__doc__ or "").strip().split("\n")[0],
                                is_default=default == tagger.name))
    return infos
