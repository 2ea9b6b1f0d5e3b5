"""Which tagger a name means: ``builtin``, an installed model pack, or a plugin's tagger."""

from __future__ import annotations

from phototag.config import Settings
from phototag.tagging.base import Tagger, TaggerError, TaggerInfo

BUILTIN = "builtin"


def _pack_names(settings: Settings) -> list[str]:
    try:
        from phototag.tagging.packs import list_packs
    except ImportError:  # pragma: no cover - packs module always ships
        return []
    return [p.name for p in list_packs(settings.models_dir)]


def _plugin_taggers(settings: Settings) -> dict[str, Tagger]:
    from phototag.plugins import taggers

    return {t.name: t for t in taggers(settings)}


def get_tagger(settings: Settings, name: str | None = None) -> Tagger:
    """The tagger called ``name`` (default: the configured default model), as the user tuned it:
    a fine-tuned version (``phototag finetune``) is loaded as such, and thresholds learned by
    ``phototag calibrate --apply`` are applied."""
    from phototag.learn.versions import load_model

    return load_model(settings, name)


def get_base_tagger(settings: Settings, name: str | None = None) -> Tagger:
    """The built-in model, a model pack or a plugin's tagger, without user thresholds."""
    name = name or settings.default_model
    if name == BUILTIN:
        from phototag.tagging.builtin import BuiltinTagger

        return BuiltinTagger()
    if name in _pack_names(settings):
        from phototag.tagging.packs import load_pack_tagger

        return load_pack_tagger(
            settings.models_dir, name,
            device=settings.get("device"), precision=settings.get("precision"),
            threshold=settings.get("threshold"),
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
    default = settings.default_model
    infos = [TaggerInfo(BUILTIN, "builtin/efficientnet-lite0", "builtin",
                        "EfficientNet-Lite0 (ImageNet) + face detection; ships with phototag",
                        is_default=default == BUILTIN)]
    try:
        from phototag.tagging.packs import list_packs
    except ImportError:  # pragma: no cover
        return infos
    for pack in list_packs(settings.models_dir):
        infos.append(TaggerInfo(pack.name, getattr(pack, "model_id", pack.name), "pack",
                                getattr(pack, "description", ""), is_default=default == pack.name))
    from phototag.learn.versions import list_versions

    for version in list_versions(settings):
        name = version.get("name", "")
        infos.append(TaggerInfo(name, version.get("model_id", name), "finetuned",
                                f"fine-tuned from {version.get('base', '?')}", is_default=default == name))
    return infos
